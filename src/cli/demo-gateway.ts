/**
 * `cordon demo`'s gateway act: an agent calls an API through the gateway, which injects an API
 * key the agent never holds; the agent then asks for that key itself and is refused. The demo
 * brings its own pieces: a small tickets API on a free port that records the key it received, a
 * policy naming it as an upstream, and an in-memory stand-in for Vault KV holding the key (a real
 * deployment reads it from Vault with `kv: secret/data/tickets`).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Broker } from '../broker.ts';
import { attachProviders } from '../credentials/revoke.ts';
import { registerAgent } from '../agents/registry.ts';
import { ProviderError, type CredentialProvider } from '../providers/provider.ts';
import type { Providers } from '../providers/index.ts';
import { auditRows } from '../store/audit.ts';
import { agentNames, auditJson, auditTable } from './audit.ts';

/** What the demo's steps use to tell the story (demo.ts). */
export interface DemoScript {
  step(title: string): void;
  say(s?: string): void;
  cmd(s: string): void;
  show(v: unknown): void;
  expect(cond: boolean, what: string): void;
  record(k: string, v: unknown): void;
  /** The table of audit rows, for people (nothing in --json mode). */
  out(s: string): Promise<void>;
}

const KV_PATH = 'secret/data/tickets';

/** The tickets API: answers `GET /api/tickets/{id}` and records the Authorization header of every request. */
export class DemoApi {
  readonly received: Array<{ method: string; path: string; authorization: string | undefined }> = [];
  #server?: Server;
  url = '';

  async start(): Promise<void> {
    this.#server = createServer((req, res) => {
      this.received.push({ method: req.method ?? '', path: req.url ?? '', authorization: req.headers.authorization });
      const m = /^\/api\/tickets\/(\d+)$/.exec(req.url ?? '');
      res.writeHead(m ? 200 : 404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(m ? { id: Number(m[1]), title: 'Export to CSV drops the last row', status: 'open' } : { error: 'not found' }));
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    if (!this.#server) return;
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server!.close(() => resolve()));
  }
}

/** The demo's policy: the tickets API as an upstream, its key delivered to the gateway only, and no `cred:` scope for it. */
export const ticketBotPolicy = (apiUrl: string): string => `# Written by cordon demo: an agent that reads tickets through the gateway.
name: ticket-bot
description: Reads tickets through the gateway; never holds the tickets API key.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:tickets]
credentials:
  tickets-key: { provider: vault, kv: ${KV_PATH}, ttl: 10m, deliver: gateway }
upstreams:
  tickets:
    url: ${apiUrl}/api
    credential: tickets-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    rules:
      read: { methods: [GET], paths: ["/tickets/*"] }
`;

/** A stand-in for Vault KV v2: one static secret in memory, read as the vault provider would read it. */
function inMemoryKv(secrets: Record<string, Record<string, string>>): CredentialProvider {
  return {
    name: 'vault',
    plan: (req) => {
      const ttl = Math.max(1, Math.min(req.spec.ttl, req.remainingSec.token - 1));
      return { ttlSec: ttl, expiresAtMax: req.now + ttl * 1000 };
    },
    async issue(req, plan) {
      const path = req.spec.provider === 'vault' ? (req.spec.kv ?? req.spec.path ?? '') : '';
      const value = secrets[path];
      if (!value) throw new ProviderError('vault', 'not_found', `no secret at ${path} in the demo's Vault stand-in`);
      return { credentials: { ...value }, expiresAt: req.now + plan.ttlSec * 1000, handle: { kind: 'static' }, details: { path, static: true }, static: true };
    },
    revoke: async (targets) => targets.map((t) => ({ id: t.id, outcome: 'not_revocable' as const, note: "a static secret in the demo's Vault stand-in" })),
    health: async () => ({ ok: true, detail: 'in-memory stand-in for Vault KV (cordon demo)' }),
  };
}

/** The API key of this run, made up fresh, and the stand-in that holds it. Returns the detach. */
export function attachDemoVault(b: Broker): { key: string; detach: () => void } {
  const key = `tk-live-${randomBytes(12).toString('hex')}`;
  const providers: Providers = new Map([['vault', inMemoryKv({ [KV_PATH]: { api_key: key } })]]);
  return { key, detach: attachProviders(b, providers) };
}

interface Answer {
  status: number;
  text: string;
  body: unknown;
}

async function call(url: string, init: RequestInit): Promise<Answer> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* keep text */
  }
  return { status: res.status, text: `${JSON.stringify([...res.headers])}\n${text}`, body };
}

const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

/** The act itself (two steps), against the running broker at `issuer` and gateway at `gateway`. */
export async function gatewayAct(s: DemoScript, b: Broker, o: { issuer: string; gateway: string; api: DemoApi; key: string }): Promise<void> {
  const masked = `${o.key.slice(0, 8)}…`;
  s.step('Through the gateway: an agent calls an API with a key it never holds');
  s.say(`   A tickets API at ${o.api.url} wants "Authorization: Bearer <API key>". The key is in Vault KV at ${KV_PATH}`);
  s.say('   (an in-memory stand-in here). Policy ticket-bot names the API as upstream "tickets", delivers the key to the');
  s.say('   gateway only (deliver: gateway), and grants gw:tickets, not cred:tickets-key.');
  s.cmd('cordon agent register ticket-bot --policy ticket-bot');
  const bot = await registerAgent(b, { name: 'ticket-bot', policy: 'ticket-bot', auth: 'secret', actor: 'demo' });
  const open = await call(`${o.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(bot.agent.id, bot.clientSecret!) },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'gw:tickets', task: 'triage-ticket-42' }).toString(),
  });
  s.expect(open.status === 200, `session start answered ${open.status} ${JSON.stringify(open.body)}`);
  const { access_token: tok, sid } = open.body as { access_token: string; sid: string };
  const auth = { authorization: `Bearer ${tok}` };
  s.say(`   ticket-bot opened session ${sid} with scope gw:tickets: its token is all it holds.`);

  s.cmd(`GET ${o.gateway}/u/tickets/tickets/42   (Authorization: Bearer <ticket-bot token>)`);
  const read = await call(`${o.gateway}/u/tickets/tickets/42`, { headers: auth });
  s.expect(read.status === 200, `the call through the gateway answered ${read.status} ${read.text}`);
  s.say(`   HTTP ${read.status}`);
  s.show(read.body);
  const got = o.api.received.at(-1);
  s.expect(got?.authorization === `Bearer ${o.key}`, 'the API did not receive the injected key');
  s.expect(!JSON.stringify(o.api.received).includes(tok), "the agent's token reached the API");
  s.say(`   The API received "Authorization: Bearer ${masked}": the gateway took the agent's token off and put the key on.`);

  s.cmd(`POST ${o.gateway}/u/tickets/tickets/42/comments   (no rule of "tickets" allows it)`);
  const before = o.api.received.length;
  const write = await call(`${o.gateway}/u/tickets/tickets/42/comments`, { method: 'POST', headers: auth, body: '{"text":"closing"}' });
  s.expect(write.status === 403 && o.api.received.length === before, `a call outside the rules answered ${write.status} or reached the API`);
  s.say(`   HTTP ${write.status}, and nothing reached the API:`);
  s.show(write.body);
  s.record('calls', { read: { status: read.status, body: read.body }, outside_rules: { status: write.status, body: write.body } });

  s.step('The agent tries to read the key itself: refused');
  s.cmd('POST /credentials/tickets-key   (Authorization: Bearer <ticket-bot token>)');
  const steal = await call(`${o.issuer}/credentials/tickets-key`, { method: 'POST', headers: auth });
  s.expect(steal.status === 403, `asking for the key answered ${steal.status} ${steal.text}`);
  s.say(`   HTTP ${steal.status}`);
  s.show(steal.body);
  const answers = [open, read, write, steal].map((a) => a.text).join('\n');
  s.expect(!answers.includes(o.key), 'the key appeared in an answer to the agent');
  s.say('   The agent never saw the key: it is in none of the answers the agent got (checked), headers included.');
  s.say('   Only the API received it, from the gateway. A prompt that talks the agent into leaking its secrets finds none.');

  s.cmd(`cordon audit tail   (the rows of session ${sid})`);
  await b.issuance.idle();
  const rows = await auditRows.bySession(b.db, sid);
  s.expect(!JSON.stringify(rows).includes(o.key), 'the key appeared in the audit log');
  s.expect(
    rows.some((r) => r.event === 'gateway.call' && r.decision === 'allow') && rows.some((r) => r.event === 'gateway.call' && r.decision === 'deny'),
    'the gateway calls are not in the audit log',
  );
  await s.out(
    `${auditTable(rows, await agentNames(b.db))
      .trimEnd()
      .replace(/^/gm, '   ')}\n`,
  );
  s.say('   Every call is a row (gateway.call: upstream, method, path, rule, status; the credential by id, never its value),');
  s.say('   and so is the refused request for the key.');
  s.record('refused', { status: steal.status, ...(steal.body as object) });
  s.record('audit', rows.map(auditJson));
}
