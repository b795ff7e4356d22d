/**
 * Fixture for the MCP authorization suites (not a test file): a test broker whose
 * CORDON_GATEWAY_URL is the address the gateway really listens on, so a resource indicator the
 * broker accepts (`{gateway}/mcp/{upstream}`) is the one the gateway publishes and admits.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMcpHandler, McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { policyDir, register, type Agent } from './delegation.kit.ts';
import { startGateway, type RunningGateway } from '../src/gateway/server.ts';

/** Policies: mcp-owner defines the MCP upstreams `github` and `team-wiki` (and an http upstream), mcp-other defines `github` with another tool and `docs`. */
export function mcpPolicies(mcpUrl = 'http://127.0.0.1:9/mcp'): Record<string, string> {
  const credential = `
credentials:
  pat: { provider: vault, path: secret/data/github, ttl: 10m }`;
  const inject = `credential: pat
    inject: { header: Authorization, value: "Bearer {secret.token}" }`;
  return {
    'mcp-owner.yaml': `
name: mcp-owner
description: Reaches the github MCP server through the gateway.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:github, gw:tickets, gw:team-wiki]
delegation:
  max_depth: 1
  scopes: [gw:github/list_issues]
${credential}
upstreams:
  github:
    kind: mcp
    url: ${mcpUrl}
    ${inject}
    tools: [list_issues, get_issue]
  team-wiki:
    kind: mcp
    url: ${mcpUrl}
    ${inject}
    tools: [search]
  tickets:
    url: http://127.0.0.1:9/api
    ${inject}
    rules: { read: { methods: [GET], paths: ["/**"] } }
`,
    'mcp-other.yaml': `
name: mcp-other
description: Defines the same MCP upstream with another tool, and one more.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:github, gw:docs]
${credential}
upstreams:
  github:
    kind: mcp
    url: ${mcpUrl}
    ${inject}
    tools: [add_issue_comment]
  docs:
    kind: mcp
    url: ${mcpUrl}
    ${inject}
    tools: [search]
`,
    'mcp-helper.yaml': `
name: mcp-helper
description: A sub-agent that may receive one github tool.
token_ttl: 5m
session_ttl: 1h
scopes: [gw:github/list_issues]
`,
  };
}

/** A port free right now (the gateway must be told its URL before it listens). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface McpAuthFixture {
  tb: TestBroker;
  gw: RunningGateway;
  /** The gateway's public URL, as the broker knows it. */
  gatewayUrl: string;
  owner: Agent;
  other: Agent;
  helper: Agent;
  stop(): Promise<void>;
}

/**
 * `gatewayUrl`: the gateway's public URL is a front door of the test's own (it calls the gateway's
 * handlers); the gateway itself then listens on a port of its own.
 */
export async function mcpAuthFixture(opts: { mcpUrl?: string; gatewayUrl?: string } = {}): Promise<McpAuthFixture> {
  const port = opts.gatewayUrl ? 0 : await freePort();
  const gatewayUrl = opts.gatewayUrl ?? `http://127.0.0.1:${port}`;
  const tb = await startTestBroker({ policyDir: policyDir(mcpPolicies(opts.mcpUrl)), env: { CORDON_GATEWAY_URL: gatewayUrl } });
  const gw = await startGateway(tb.b, { port, host: '127.0.0.1', url: gatewayUrl });
  const suffix = Math.random().toString(36).slice(2, 8);
  return {
    tb,
    gw,
    gatewayUrl,
    owner: await register(tb, `mcp-owner-${suffix}`, 'mcp-owner'),
    other: await register(tb, `mcp-other-${suffix}`, 'mcp-other'),
    helper: await register(tb, `mcp-helper-${suffix}`, 'mcp-helper'),
    async stop() {
      await gw.close();
      await tb.b.issuance.idle();
      await tb.close();
    },
  };
}

/** A real MCP server (official SDK, a new instance per request as it advises) with one tool, `echo`, that records each call's text. */
export function echoMcpHandler(calls: string[]): ReturnType<typeof createMcpHandler> {
  return createMcpHandler(() => {
    const s = new McpServer({ name: 'recording', version: '1.0.0' });
    s.registerTool('echo', { description: 'Echoes its text.', inputSchema: z.object({ text: z.string() }) }, async ({ text }) => {
      calls.push(text);
      return { content: [{ type: 'text' as const, text }] };
    });
    return s;
  });
}

/** Answers a node:http request with the MCP handler (its web-standard face). */
export async function answerMcp(handler: ReturnType<typeof createMcpHandler>, req: IncomingMessage, res: ServerResponse, base: string): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers.set(k, v);
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : Buffer.concat(chunks);
  const response = await handler.fetch(new Request(`${base}${req.url}`, { method: req.method, headers, body }));
  res.writeHead(response.status, Object.fromEntries(response.headers));
  const reader = response.body?.getReader();
  for (let r = await reader?.read(); r && !r.done; r = await reader!.read()) res.write(r.value);
  res.end();
}
