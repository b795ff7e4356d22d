/**
 * Fixture for the gateway suites (not a test file): a test broker with the Vault double behind
 * its provider, the gateway on a free port, and upstreams that record what they received so
 * tests assert what the gateway sent.
 */
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { VaultDouble } from './doubles/vault.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { freshPgDatabase } from './helpers/pg.ts';
import { policyDir, register, type Agent } from './delegation.kit.ts';
import { credentialsRoute } from '../src/http/credentials.ts';
import { startBackendCredentials } from '../src/credentials/sweep.ts';
import { startGateway, type RunningGateway } from '../src/gateway/server.ts';
import type { Lookup } from '../src/gateway/egress-rules.ts';

export const TICKETS_KEY = 'tk-LIVE-9f8e7d6c5b4a';

export interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An upstream that records every request; `answer` may be replaced per test (default: 200 JSON echoing the path). */
export class RecordingUpstream {
  readonly received: Received[] = [];
  server!: Server;
  url = '';
  answer: (req: IncomingMessage, res: ServerResponse, body: string) => void = (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: true, path: req.url }));
  };

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        this.received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
        this.answer(req, res, body);
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /**
   * Until `restore()`, answers with an event stream that sends one event and stays open; `closed`
   * resolves when the gateway hangs up on it (a revocation cutting the stream).
   */
  holdStreams(): { closed: Promise<void>; restore: () => void } {
    let hungUp!: () => void;
    const closed = new Promise<void>((r) => (hungUp = r));
    const saved = this.answer;
    this.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
      res.on('close', () => hungUp());
    };
    return { closed, restore: () => (this.answer = saved) };
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export function gatewayPolicies(upstreamUrl: string): Record<string, string> {
  return {
    'gw-owner.yaml': `
name: gw-owner
description: Calls the tickets API through the gateway.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:tickets, gw:open]
delegation:
  max_depth: 1
  scopes: [gw:tickets/read]
credentials:
  tickets-key: { provider: vault, path: secret/data/tickets/api, ttl: 10m }
upstreams:
  tickets:
    url: ${upstreamUrl}/api
    credential: tickets-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    timeout: 2s
    max_body: 1024
    rules:
      read: { methods: [GET, HEAD], paths: ["/tickets/*", "/stream"] }
      comment: { methods: [POST], paths: ["/tickets/*/comments"] }
  open:
    url: ${upstreamUrl}/open
    credential: tickets-key
    inject: { header: X-Api-Key, value: "{secret.api_key}" }
    rules:
      any: { methods: [GET], paths: ["/**"] }
`,
    'gw-helper.yaml': `
name: gw-helper
description: A sub-agent that may receive tickets scopes.
token_ttl: 5m
session_ttl: 1h
scopes: [gw:tickets/read, gw:tickets/comment]
`,
  };
}

/** The Vault double holding the tickets API key, and the broker settings that log in to it. */
export async function ticketsVault(): Promise<{ vault: VaultDouble; env: Record<string, string> }> {
  const vault = new VaultDouble('root-token');
  await vault.start();
  vault.setPolicyPaths('broker', [
    { path: 'auth/token/create', capabilities: ['update'] },
    { path: 'auth/token/revoke-accessor', capabilities: ['update'] },
    { path: 'auth/token/lookup-self', capabilities: ['read'] },
    { path: 'auth/token/renew-self', capabilities: ['update'] },
    { path: 'sys/leases/revoke', capabilities: ['update'] },
    { path: 'secret/data/tickets/*', capabilities: ['read'] },
  ]);
  vault.putKv('tickets/api', { api_key: TICKETS_KEY });
  const token = vault.mintToken({ policies: ['broker'], addDefault: false, displayName: 'cordon-broker' }).token;
  return { vault, env: { VAULT_ADDR: vault.url, VAULT_TOKEN: token, VAULT_TIMEOUT_MS: '2000' } };
}

export interface GatewayFixture {
  tb: TestBroker;
  vault: VaultDouble;
  upstream: RecordingUpstream;
  gw: RunningGateway;
  owner: Agent;
  helper: Agent;
  /** A call through the gateway. */
  call(path: string, init?: RequestInit & { token?: string }): Promise<{ status: number; body: any; headers: Headers; text: string }>;
  stop(): Promise<void>;
}

/** `policies` adds policy files (given the recording upstream's URL); `env` adds broker configuration (e.g. CORDON_ALERT_WEBHOOK). */
export async function gatewayFixture(
  opts: { pg?: boolean; policies?: (upstreamUrl: string) => Record<string, string>; env?: Record<string, string>; lookup?: Lookup } = {},
): Promise<GatewayFixture> {
  const upstream = new RecordingUpstream();
  await upstream.start();
  const { vault, env: vaultEnv } = await ticketsVault();
  // A database of its own: the shared one holds other runs' signing keys, whose private halves this broker lacks.
  const pg = opts.pg ? await freshPgDatabase() : undefined;
  const tb = await startTestBroker({
    policyDir: policyDir({ ...gatewayPolicies(upstream.url), ...opts.policies?.(upstream.url) }),
    ...(pg ? { databaseUrl: pg.url } : {}),
    env: { ...vaultEnv, ...opts.env },
    ext: { routes: [credentialsRoute] },
  });
  vault.now = () => tb.clock.now();
  const creds = await startBackendCredentials(tb.b, { sweep: false });
  const gw = await startGateway(tb.b, { port: 0, host: '127.0.0.1', ...(opts.lookup ? { lookup: opts.lookup } : {}) });
  const suffix = Math.random().toString(36).slice(2, 8);
  const owner = await register(tb, `gw-owner-${suffix}`, 'gw-owner');
  const helper = await register(tb, `gw-helper-${suffix}`, 'gw-helper');
  return {
    tb,
    vault,
    upstream,
    gw,
    owner,
    helper,
    async call(path, init = {}) {
      const { token, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token) headers.set('authorization', `Bearer ${token}`);
      const r = await fetch(`${gw.url}${path}`, { ...rest, headers });
      const text = await r.text();
      let body: any = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      return { status: r.status, body, headers: r.headers, text };
    },
    async stop() {
      await gw.close();
      await creds.stop();
      await tb.b.issuance.idle();
      await tb.close();
      await pg?.drop();
      await vault.stop();
      await upstream.stop();
    },
  };
}
