/**
 * Fixture for the MCP gateway suites (not a test file): real MCP servers built with the official
 * SDKs of both generations behind the gateway — v1 (`@modelcontextprotocol/sdk`) stateful with
 * SSE answers and stateless with JSON answers, and 2.x (`@modelcontextprotocol/server`,
 * `createMcpHandler`: 2026-07-28 and the 2025 stateless fallback) — each recording every tool it
 * ran and the credential it was called with; and clients of both generations in front.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { McpServer as V1Server } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer as V2Server, createMcpHandler } from '@modelcontextprotocol/server';
import { Client as V2Client, StreamableHTTPClientTransport as V2Transport } from '@modelcontextprotocol/client';
import { gatewayFixture, type GatewayFixture } from './gateway.kit.ts';
import { register, type Agent } from './delegation.kit.ts';

/** What one MCP server ran and saw. Descriptions may be changed by a test (a server changing a tool's definition). */
export class ToolShop {
  readonly calls: Array<{ tool: string; args: Record<string, unknown>; authorization: string | undefined }> = [];
  /** Every HTTP request the server received: method, headers, body. */
  readonly requests: Array<{ method: string; headers: IncomingMessage['headers']; body: string }> = [];
  descriptions: Record<string, string> = {
    list_issues: 'List the issues of a repository.',
    get_issue: 'Read one issue.',
    add_issue_comment: 'Comment on an issue.',
    delete_repo: 'Delete a repository.',
    fail: 'Always fails.',
  };
  #auth: string | undefined;

  ran(tool: string, args: Record<string, unknown>): void {
    this.calls.push({ tool, args, authorization: this.#auth });
  }

  saw(req: IncomingMessage, body: string): void {
    this.#auth = req.headers.authorization;
    this.requests.push({ method: req.method ?? '', headers: req.headers, body });
  }

  toolsCalled(): string[] {
    return this.calls.map((c) => c.tool);
  }
}

type Registrar = {
  registerTool(name: string, config: { description?: string; inputSchema?: any }, cb: (args: any) => any): unknown;
  registerResource(name: string, uri: string, config: Record<string, unknown>, cb: (uri: URL) => any): unknown;
  registerPrompt(name: string, config: { description?: string }, cb: () => any): unknown;
};

/** The same tools, resources and prompts on a server of either generation. */
function define(s: Registrar, shop: ToolShop): void {
  const text = (t: string) => ({ content: [{ type: 'text' as const, text: t }] });
  const d = shop.descriptions;
  s.registerTool('list_issues', { description: d.list_issues, inputSchema: z.object({ repo: z.string() }) }, async ({ repo }) => {
    shop.ran('list_issues', { repo });
    return text(`issues of ${repo}: #1, #2`);
  });
  s.registerTool('get_issue', { description: d.get_issue, inputSchema: z.object({ repo: z.string(), id: z.number() }) }, async (a) => {
    shop.ran('get_issue', a);
    return text(`issue ${a.id} of ${a.repo}`);
  });
  s.registerTool(
    'add_issue_comment',
    { description: d.add_issue_comment, inputSchema: z.object({ owner: z.string(), repo: z.string(), body: z.string() }) },
    async (a) => {
      shop.ran('add_issue_comment', a);
      return text('commented');
    },
  );
  s.registerTool('delete_repo', { description: d.delete_repo, inputSchema: z.object({ repo: z.string() }) }, async (a) => {
    shop.ran('delete_repo', a);
    return text('deleted');
  });
  s.registerTool('fail', { description: d.fail, inputSchema: z.object({}) }, async () => {
    shop.ran('fail', {});
    return { ...text('it failed'), isError: true };
  });
  s.registerResource('readme', 'repo://acme/readme', { description: 'The readme' }, async (uri) => ({ contents: [{ uri: uri.href, text: 'hello' }] }));
  s.registerResource('keys', 'repo://secret/keys', { description: 'Keys' }, async (uri) => ({ contents: [{ uri: uri.href, text: 'k' }] }));
  s.registerPrompt('summarize', { description: 'Summarize' }, () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'sum' } }] }));
  s.registerPrompt('exfiltrate', { description: 'Nope' }, () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'x' } }] }));
}

async function readJson(req: IncomingMessage): Promise<{ raw: string; parsed: unknown }> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks).toString();
  let parsed: unknown;
  try {
    parsed = raw ? JSON.parse(raw) : undefined;
  } catch {
    parsed = undefined;
  }
  return { raw, parsed };
}

export interface RunningMcp {
  url: string;
  shop: ToolShop;
  server: Server;
  stop(): Promise<void>;
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    handler(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp` };
}

const stopper = (server: Server, extra?: () => Promise<void>) => async (): Promise<void> => {
  await extra?.();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
};

/** v1 SDK, stateful: one transport per MCP session (Mcp-Session-Id), SSE answers, a GET stream. */
export async function startV1Stateful(shop = new ToolShop()): Promise<RunningMcp> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const { server, url } = await listen(async (req, res) => {
    const { raw, parsed } = req.method === 'POST' ? await readJson(req) : { raw: '', parsed: undefined };
    shop.saw(req, raw);
    const sid = req.headers['mcp-session-id'] as string | undefined;
    let t = sid ? transports.get(sid) : undefined;
    if (!t) {
      if (sid || !isInitializeRequest(parsed)) {
        res.writeHead(sid ? 404 : 400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null }));
        return;
      }
      const created = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void transports.set(id, created),
      });
      created.onclose = () => {
        if (created.sessionId) transports.delete(created.sessionId);
      };
      const s = new V1Server({ name: 'v1-stateful', version: '1.0.0' });
      define(s, shop);
      await s.connect(created);
      t = created;
    }
    await t.handleRequest(req, res, parsed);
  });
  return { url, shop, server, stop: stopper(server, async () => void (await Promise.all([...transports.values()].map((t) => t.close())))) };
}

/** v1 SDK, stateless: a server and transport per request (never shared: GHSA-345p-7cg4-v4c7), JSON answers. */
export async function startV1Stateless(shop = new ToolShop()): Promise<RunningMcp> {
  const { server, url } = await listen(async (req, res) => {
    const { raw, parsed } = req.method === 'POST' ? await readJson(req) : { raw: '', parsed: undefined };
    shop.saw(req, raw);
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'POST' }).end();
      return;
    }
    const t = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    const s = new V1Server({ name: 'v1-stateless', version: '1.0.0' });
    define(s, shop);
    res.on('close', () => {
      void t.close();
      void s.close();
    });
    await s.connect(t);
    await t.handleRequest(req, res, parsed);
  });
  return { url, shop, server, stop: stopper(server) };
}

/** 2.x SDK: createMcpHandler (2026-07-28 per request, and the 2025 stateless fallback), behind a small node:http adapter. */
export async function startV2(shop = new ToolShop()): Promise<RunningMcp> {
  const handler = createMcpHandler(() => {
    const s = new V2Server({ name: 'v2', version: '2.0.0' });
    define(s, shop);
    return s;
  });
  const { server, url } = await listen(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    shop.saw(req, body.toString());
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    const answer = await handler.fetch(
      new Request(`http://127.0.0.1${req.url}`, { method: req.method, headers, body: body.length ? body : undefined, signal: abort.signal }),
    );
    res.writeHead(answer.status, Object.fromEntries(answer.headers));
    if (answer.body) {
      res.flushHeaders();
      try {
        for await (const c of answer.body as unknown as AsyncIterable<Uint8Array>) res.write(c);
      } catch {
        /* the client went away */
      }
    }
    res.end();
  });
  return { url, shop, server, stop: stopper(server, () => handler.close()) };
}

export type Generation = 'v1' | 'v2-legacy' | 'v2-modern';

/** A connected MCP client of the given generation, with a supplied bearer token. */
export async function connectClient(gen: Generation, url: string, token: string): Promise<McpClient> {
  const headers = { authorization: `Bearer ${token}` };
  if (gen === 'v1') {
    const c = new V1Client({ name: 'test-agent', version: '1.0.0' });
    const t = new V1Transport(new URL(url), { requestInit: { headers } });
    await c.connect(t);
    return { gen, client: c as unknown as McpClient['client'], close: () => c.close(), sessionId: () => t.sessionId };
  }
  const c = new V2Client({ name: 'test-agent', version: '2.0.0' }, gen === 'v2-modern' ? { versionNegotiation: { mode: 'auto' } } : {});
  const t = new V2Transport(new URL(url), { requestInit: { headers } });
  await c.connect(t);
  return { gen, client: c as unknown as McpClient['client'], close: () => c.close(), sessionId: () => t.sessionId };
}

export interface McpClient {
  gen: Generation;
  client: {
    listTools(): Promise<{ tools: Array<{ name: string; description?: string }> }>;
    callTool(p: { name: string; arguments?: Record<string, unknown> }): Promise<{ content?: unknown; isError?: boolean }>;
    listResources(): Promise<{ resources: Array<{ uri: string }> }>;
    readResource(p: { uri: string }): Promise<{ contents: unknown[] }>;
    listPrompts(): Promise<{ prompts: Array<{ name: string }> }>;
    getPrompt(p: { name: string }): Promise<unknown>;
  };
  sessionId(): string | undefined;
  close(): Promise<void>;
}

/** Upstream names of the fixture: one per server generation. */
export const UPSTREAMS = { v1s: 'gh-v1s', v1j: 'gh-v1j', v2: 'gh-v2' } as const;

function upstreamYaml(name: string, url: string, extra = ''): string {
  return `
  ${name}:
    kind: mcp
    url: ${url}
    credential: gh-pat
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    timeout: 2s
    max_body: 16384
    tools: [list_issues, get_issue, add_issue_comment, fail]
    args: { add_issue_comment: { owner: acme, repo: "agents-*" } }
    resources: ["repo://acme/*"]
    prompts: [summarize]${extra}`;
}

export interface McpFixture extends GatewayFixture {
  servers: Record<keyof typeof UPSTREAMS, RunningMcp>;
  mcpOwner: Agent;
  mcpHelper: Agent;
  /** The gateway URL of an MCP upstream. */
  mcpUrl(upstream: string): string;
  stopAll(): Promise<void>;
}

/** The gateway fixture with three MCP upstreams (one per server generation), an owner granted them, and a sub-agent. */
export async function mcpFixture(
  opts: { pg?: boolean; extraPolicies?: (servers: Record<keyof typeof UPSTREAMS, RunningMcp>, upstreamUrl: string) => Record<string, string> } = {},
): Promise<McpFixture> {
  const servers = { v1s: await startV1Stateful(), v1j: await startV1Stateless(), v2: await startV2() };
  const all = Object.values(UPSTREAMS);
  const f = await gatewayFixture({
    ...(opts.pg ? { pg: true } : {}),
    policies: (upstreamUrl) => ({
      'mcp-owner.yaml': `
name: mcp-owner
description: Reaches GitHub-like MCP servers through the gateway.
token_ttl: 10m
session_ttl: 1h
scopes: [${all.map((n) => `gw:${n}`).join(', ')}]
delegation:
  max_depth: 1
  scopes: [${all.map((n) => `gw:${n}/list_issues`).join(', ')}]
credentials:
  gh-pat: { provider: vault, path: secret/data/tickets/api, ttl: 10m }
upstreams:${upstreamYaml(UPSTREAMS.v1s, servers.v1s.url, '\n    audit_args: full')}${upstreamYaml(UPSTREAMS.v1j, servers.v1j.url)}${upstreamYaml(UPSTREAMS.v2, servers.v2.url)}
`,
      'mcp-helper.yaml': `
name: mcp-helper
description: A sub-agent that may receive MCP tool grants.
token_ttl: 5m
session_ttl: 1h
scopes: [${all.map((n) => `gw:${n}/list_issues, gw:${n}/get_issue`).join(', ')}]
`,
      ...opts.extraPolicies?.(servers, upstreamUrl),
    }),
  });
  const suffix = Math.random().toString(36).slice(2, 8);
  const mcpOwner = await register(f.tb, `mcp-owner-${suffix}`, 'mcp-owner');
  const mcpHelper = await register(f.tb, `mcp-helper-${suffix}`, 'mcp-helper');
  return {
    ...f,
    servers,
    mcpOwner,
    mcpHelper,
    mcpUrl: (upstream) => `${f.gw.url}/mcp/${upstream}`,
    async stopAll() {
      await f.stop();
      for (const s of Object.values(servers)) await s.stop();
    },
  };
}

/** A raw POST of one JSON-RPC message (or anything) to the gateway's MCP front door. */
export async function rawPost(
  url: string,
  token: string | undefined,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; text: string; json: any }> {
  const r = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, text, json };
}
