/**
 * A small API protected by Cordon: tokens are verified offline against the broker's JWKS,
 * revocations arrive through the feed, and the caller is on `req.agent`.
 *
 *   CORDON_ISSUER=http://127.0.0.1:8080 PORT=9090 node --import tsx examples/resource-server.ts
 *
 * Reading a ticket needs `tickets:read`; closing one needs `tickets:write`.
 */
import { pathToFileURL } from 'node:url';
import type { Server } from 'node:http';
import express from 'express';
import { requireAgentToken } from 'cordon';

export const AUDIENCE = 'https://tickets.example';

export async function startResourceServer(opts: { issuer: string; port?: number; pollIntervalMs?: number }): Promise<{ url: string; close(): Promise<void> }> {
  const common = { issuer: opts.issuer, audience: AUDIENCE, pollIntervalMs: opts.pollIntervalMs ?? 5000 };
  const canRead = requireAgentToken({ ...common, scopes: ['tickets:read'] });
  const canWrite = requireAgentToken({ ...common, scopes: ['tickets:write'] });
  const app = express();
  app.get('/tickets/:id', canRead, (req, res) => {
    const a = req.agent!;
    res.json({
      id: req.params.id,
      title: `Ticket ${req.params.id}: printer on fire`,
      read_by: a.client_id,
      on_behalf_of: a.sub,
      chain: a.chain,
      session: a.sid,
    });
  });
  app.post('/tickets/:id/close', canWrite, (req, res) => {
    res.json({ id: req.params.id, closed_by: req.agent!.client_id });
  });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(opts.port ?? 0, '127.0.0.1', () => resolve(s));
  });
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        canRead.close();
        canWrite.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const issuer = process.env.CORDON_ISSUER;
  if (!issuer) {
    console.error('resource-server: set CORDON_ISSUER to the broker URL');
    process.exit(2);
  }
  const rs = await startResourceServer({ issuer, port: Number(process.env.PORT ?? 9090), pollIntervalMs: Number(process.env.POLL_MS ?? 5000) });
  console.log(`resource server listening on ${rs.url} (audience ${AUDIENCE})`);
  const stop = () => void rs.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
