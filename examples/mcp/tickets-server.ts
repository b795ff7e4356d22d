/**
 * A tickets MCP server, built with the official SDK (`@modelcontextprotocol/server` 2.x), over
 * Streamable HTTP at `/mcp`. Three tools: `list_tickets` and `get_ticket` read, `close_ticket`
 * writes. It wants its API key in `X-Api-Key` on every request: agents never hold that key, the
 * Cordon gateway adds it (from Vault) to the calls it lets through. Every tool run and every
 * request without the key is printed, so you can see what reached it.
 *
 *   TICKETS_API_KEY=… PORT=9191 node --import tsx examples/mcp/tickets-server.ts
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer, createMcpHandler } from '@modelcontextprotocol/server';
import { z } from 'zod';

const apiKey = process.env.TICKETS_API_KEY;
if (!apiKey) {
  console.error('tickets-mcp: set TICKETS_API_KEY (the key the gateway injects)');
  process.exit(2);
}
/** QUIET=1: no line per tool run (the bench calls it thousands of times a second). */
const say = process.env.QUIET === '1' ? () => {} : (s: string) => console.log(`tickets-mcp: ${s}`);

interface Ticket {
  id: string;
  queue: string;
  title: string;
  status: 'open' | 'closed';
}
const tickets = new Map<string, Ticket>(
  [
    { id: 'T-1001', queue: 'support-eu', title: 'Export to CSV drops the last row', status: 'open' as const },
    { id: 'T-1002', queue: 'support-eu', title: 'Password reset mail never arrives', status: 'open' as const },
    { id: 'T-1003', queue: 'support-us', title: 'Dashboard shows yesterday twice', status: 'open' as const },
    { id: 'T-2001', queue: 'billing', title: 'Refund for invoice 7731', status: 'open' as const },
  ].map((t) => [t.id, t]),
);

const text = (t: string, isError = false) => ({ content: [{ type: 'text' as const, text: t }], ...(isError ? { isError } : {}) });

// One McpServer per request (the SDK's stateless serving); the tickets live outside it.
const handler = createMcpHandler(() => {
  const s = new McpServer({ name: 'tickets', version: '1.0.0' });
  s.registerTool('list_tickets', { description: 'List the open tickets of a queue.', inputSchema: z.object({ queue: z.string() }) }, async ({ queue }) => {
    say(`list_tickets ${JSON.stringify({ queue })}`);
    const open = [...tickets.values()].filter((t) => t.queue === queue && t.status === 'open');
    return text(open.map((t) => `${t.id} ${t.title}`).join('\n') || `no open tickets in ${queue}`);
  });
  s.registerTool('get_ticket', { description: 'Read one ticket.', inputSchema: z.object({ id: z.string() }) }, async ({ id }) => {
    say(`get_ticket ${JSON.stringify({ id })}`);
    const t = tickets.get(id);
    return t ? text(JSON.stringify(t)) : text(`no ticket ${id}`, true);
  });
  s.registerTool(
    'close_ticket',
    { description: 'Close a ticket (writes).', inputSchema: z.object({ id: z.string(), note: z.string().optional() }) },
    async ({ id, note }) => {
      say(`close_ticket ${JSON.stringify({ id, note })}`);
      const t = tickets.get(id);
      if (!t) return text(`no ticket ${id}`, true);
      t.status = 'closed';
      return text(`closed ${id}`);
    },
  );
  return s;
});

/** node:http in front of the SDK's web-standard handler. */
async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.headers['x-api-key'] !== apiKey) {
    say(`refused ${req.method} ${req.url}: no valid X-Api-Key`);
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"a valid X-Api-Key is required"}');
    return;
  }
  if (!req.url?.startsWith('/mcp')) {
    res.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
  const abort = new AbortController();
  res.on('close', () => abort.abort());
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : Buffer.concat(chunks);
  const r = await handler.fetch(new Request(`http://${req.headers.host}${req.url}`, { method: req.method, headers, body, signal: abort.signal }));
  res.writeHead(r.status, Object.fromEntries(r.headers));
  if (r.body) for await (const c of r.body as unknown as AsyncIterable<Uint8Array>) res.write(c);
  res.end();
}

const server = createServer((req, res) => {
  answer(req, res).catch(() => {
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});
server.listen(Number(process.env.PORT ?? 9191), '127.0.0.1', () => {
  console.log(`tickets MCP server listening on http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`);
});
const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
