/**
 * Operating the gateway: its metrics (beside the broker under `cordon serve`, and served by the
 * gateway itself under `cordon gateway`), its `/healthz` open counts, and `cordon status`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { gatewayFixture, gatewayPolicies, RecordingUpstream, ticketsVault, type GatewayFixture } from './gateway.kit.ts';
import type { VaultDouble } from './doubles/vault.ts';
import { auditHead, auditSince, mustSession, policyDir } from './delegation.kit.ts';
import { basic, postForm, startTestBroker } from './helpers/broker.ts';
import { freshPgDatabase } from './helpers/pg.ts';
import { loadConfig, type Config } from '../src/config/index.ts';
import { registerAgent } from '../src/agents/registry.ts';
import { startBroker, startGatewayAlone } from '../src/runtime.ts';
import { auditRows } from '../src/store/audit.ts';
import { appendAuditMany, type AuditEntry } from '../src/store/audit-chain.ts';
import { transact } from '../src/store/db.ts';
import { main } from '../src/cli/main.ts';
import type { Io } from '../src/cli/output.ts';

const METRICS_TOKEN = 'm'.repeat(40);

/** Prometheus samples as name + labels + value, to find one series whatever the label order. */
function samples(text: string): Array<{ name: string; labels: Record<string, string>; value: number }> {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(l)!;
      const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
      return { name: m[1], labels, value: Number(m[3]) };
    });
}
const valueOf = (text: string, name: string, labels: Record<string, string> = {}): number | undefined =>
  samples(text).find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Holds one call open: the upstream answers `path` with the start of an event stream and never ends it. */
function holdStreams(upstream: RecordingUpstream, path: string): () => void {
  const saved = upstream.answer;
  upstream.answer = (req, res, body) => {
    if (req.url !== path) return saved(req, res, body);
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: first\n\n');
  };
  return () => (upstream.answer = saved);
}

async function openStream(url: string, tok: string): Promise<ReadableStreamDefaultReader<Uint8Array>> {
  const r = await fetch(url, { headers: { authorization: `Bearer ${tok}` } });
  assert.equal(r.status, 200);
  const reader = r.body!.getReader();
  await reader.read(); // the upstream's first event: the call is open at the gateway
  return reader;
}

async function cli(env: Record<string, string>, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  let out = '';
  let err = '';
  const io: Io = { out: (s) => void (out += s), err: (s) => void (err += s) };
  try {
    return { code: await main(argv, io), out, err };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe('gateway metrics', function () {
  this.timeout(20_000);
  const upstream = new RecordingUpstream();
  let dir: string;
  let config: Config;
  let vault: VaultDouble;
  before(async () => {
    await upstream.start();
    const tv = await ticketsVault();
    vault = tv.vault;
    dir = mkdtempSync(join(tmpdir(), 'cordon-gwops-'));
    config = loadConfig({
      CORDON_ISSUER: 'http://127.0.0.1:9',
      DATABASE_URL: `sqlite://${join(dir, 'cordon.sqlite')}`,
      CORDON_POLICY_DIR: policyDir(gatewayPolicies(upstream.url)),
      CORDON_KEY_DIR: join(dir, 'keys'),
      CORDON_AUDIT_DIR: join(dir, 'audit'),
      CORDON_LOG_LEVEL: 'silent',
      CORDON_METRICS_TOKEN: METRICS_TOKEN,
      ...tv.env,
    });
  });
  after(async () => {
    await vault.stop();
    await upstream.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('beside the broker (cordon serve): calls per upstream and decision, refusals by reason, upstream latency, open calls, on the broker’s /metrics', async () => {
    const r = await startBroker(config, { port: 0, gatewayPort: 0, log: pino({ level: 'silent' }) });
    const release = holdStreams(upstream, '/open/stream');
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    try {
      const gw = r.gateway!.url;
      const owner = await registerAgent(r.b, { name: 'gw-ops-owner', policy: 'gw-owner', auth: 'secret' });
      const t = await postForm(
        `${r.url}/token`,
        { grant_type: 'client_credentials', scope: 'gw:open' },
        { authorization: basic(owner.agent.id, owner.clientSecret!) },
      );
      assert.equal(t.status, 200, JSON.stringify(t.body));
      const tok: string = t.body.access_token;
      const auth = { authorization: `Bearer ${tok}` };
      assert.equal((await fetch(`${gw}/u/open/docs/1`, { headers: auth })).status, 200);
      assert.equal((await fetch(`${gw}/u/open/docs/2`, { headers: auth })).status, 200);
      assert.equal((await fetch(`${gw}/u/tickets/tickets/1`, { headers: auth })).status, 403);
      assert.equal((await fetch(`${gw}/u/made-up-${Date.now()}/x`, { headers: auth })).status, 404);
      assert.equal((await fetch(`${gw}/u/open/docs/3`)).status, 401);
      reader = await openStream(`${gw}/u/open/stream`, tok);

      assert.equal((await fetch(`${r.url}/metrics`)).status, 401);
      const res = await fetch(`${r.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.equal(valueOf(text, 'cordon_gateway_calls_total', { upstream: 'open', decision: 'allow', status_class: '2xx' }), 2);
      assert.equal(valueOf(text, 'cordon_gateway_calls_total', { upstream: 'tickets', decision: 'deny', status_class: '4xx' }), 1);
      assert.equal(valueOf(text, 'cordon_gateway_refusals_total', { upstream: 'tickets', reason: 'gw_not_in_scope' }), 1);
      assert.equal(valueOf(text, 'cordon_gateway_refusals_total', { upstream: 'open', reason: 'token_missing' }), 1);
      // A name no policy defines is whatever the caller typed: it never becomes a label.
      assert.equal(valueOf(text, 'cordon_gateway_refusals_total', { upstream: 'other', reason: 'upstream_unknown' }), 1);
      assert.doesNotMatch(text, /made-up-/);
      // Observed when a call ends: the stream still open is not in yet.
      assert.equal(valueOf(text, 'cordon_gateway_upstream_seconds_count', { upstream: 'open' }), 2);
      assert.equal(valueOf(text, 'cordon_gateway_upstream_seconds_count', { upstream: 'tickets' }), undefined, 'a refused call reaches no upstream');
      assert.equal(valueOf(text, 'cordon_gateway_open_calls', { upstream: 'open' }), 1);
      assert.equal(valueOf(text, 'cordon_gateway_open_tunnels'), 0);
      // The broker's own families are on the same registry.
      assert.ok(valueOf(text, 'cordon_issued_total', { event: 'session.open' })! >= 1);
    } finally {
      await reader?.cancel().catch(() => {});
      release();
      await r.stop();
    }
  });

  it('alone (cordon gateway): the gateway serves /metrics itself, under the CORDON_METRICS_TOKEN bearer rule (refusals audited)', async () => {
    const g = await startGatewayAlone(config, { port: 0, log: pino({ level: 'silent' }) });
    try {
      const url = g.gateway.url;
      const head = await auditHead(g.b);
      const refused = await fetch(`${url}/metrics`);
      assert.equal(refused.status, 401);
      assert.equal((await refused.json()).error, 'invalid_token');
      const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.match(text, /# TYPE cordon_gateway_calls_total counter/);
      assert.match(text, /# TYPE cordon_gateway_upstream_seconds histogram/);
      assert.equal(valueOf(text, 'cordon_gateway_open_tunnels'), 0);
      assert.match(text, /cordon_process_/);
      // Upstream names of open calls go only to whoever may read metrics.
      assert.deepEqual(await (await fetch(`${url}/healthz`)).json(), { ok: true, open: { calls: 0, tunnels: 0 } });
      const full = await (await fetch(`${url}/healthz`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).json();
      assert.deepEqual(full, { ok: true, open: { calls: 0, tunnels: 0, upstreams: {} } });
      const rows = await auditSince(g.b, head);
      assert.deepEqual(
        rows.map((x) => [x.event, x.params.attempted, x.params.reason_tag]),
        [['deny', 'metrics', 'metrics_token']],
      );
    } finally {
      await g.stop();
    }
  });
});

describe('audit: gateway traffic in a window', function () {
  this.timeout(20_000);
  for (const db of ['sqlite', 'postgres'] as const) {
    it(`counts gateway.call and mcp.call rows per upstream, egress.connect per host, anonymous refusals per attempt, from the window's first row on (${db})`, async () => {
      const pg = db === 'postgres' ? await freshPgDatabase() : undefined;
      const tb = await startTestBroker({ http: false, ...(pg ? { databaseUrl: pg.url } : {}) });
      try {
        const t0 = 1_700_000_000_000;
        const row = (at: number, event: AuditEntry['event'], decision: 'allow' | 'deny', params: Record<string, unknown>): AuditEntry => ({
          at,
          event,
          decision,
          params,
        });
        await transact(tb.b.db, (tx) =>
          appendAuditMany(tx, [
            row(t0 - 10, 'gateway.call', 'allow', { upstream: 'tickets' }), // before the window
            row(t0, 'gateway.call', 'allow', { upstream: 'tickets' }),
            row(t0 + 1, 'gateway.call', 'allow', { upstream: 'tickets' }),
            row(t0 + 2, 'gateway.call', 'deny', { upstream: 'tickets', reason_tag: 'no_rule' }),
            row(t0 + 3, 'gateway.call', 'allow', { upstream: 'search' }),
            row(t0 + 4, 'egress.connect', 'allow', { host: 'api.example.com', port: 443 }),
            row(t0 + 5, 'egress.connect', 'deny', { host: '169.254.169.254', port: 80 }),
            row(t0 + 6, 'deny', 'deny', { attempted: 'gateway.call', reason_tag: 'token_missing' }),
            row(t0 + 7, 'deny', 'deny', { attempted: 'token', reason_tag: 'invalid_client' }),
            row(t0 + 8, 'session.open', 'allow', { scope: 'x' }),
            row(t0 + 8, 'mcp.call', 'allow', { upstream: 'github', tool: 'get_issue' }),
            row(t0 + 8, 'mcp.call', 'deny', { upstream: 'github', tool: 'delete_repo' }),
          ]),
        );
        const got = (await auditRows.gatewayTraffic(tb.b.db, t0)).map((r) => `${r.event} ${r.name} ${r.decision} ${r.count}`).sort();
        assert.deepEqual(got, [
          'deny gateway.call deny 1',
          'deny token deny 1',
          'egress.connect 169.254.169.254 deny 1',
          'egress.connect api.example.com allow 1',
          'gateway.call search allow 1',
          'gateway.call tickets allow 2',
          'gateway.call tickets deny 1',
          'mcp.call github allow 1',
          'mcp.call github deny 1',
        ]);
        assert.deepEqual(await auditRows.gatewayTraffic(tb.b.db, t0 + 9), []);
      } finally {
        await tb.close();
        await pg?.drop();
      }
    });
  }
});

describe('cordon status: gateway traffic and open calls', function () {
  this.timeout(20_000);
  let f: GatewayFixture;
  let env: Record<string, string>;
  before(async () => {
    f = await gatewayFixture();
    env = {
      DATABASE_URL: f.tb.b.config.databaseUrl,
      CORDON_KEY_DIR: f.tb.b.config.keyDir,
      CORDON_AUDIT_DIR: f.tb.b.config.auditDir,
      CORDON_POLICY_DIR: f.tb.b.config.policyDir,
      CORDON_LOG_LEVEL: 'silent',
      CORDON_GATEWAY_URL: f.gw.url,
    };
  });
  after(async () => {
    await f?.stop();
  });

  it('shows the last hour’s calls per upstream from the audit log, and open calls from the gateway’s /healthz', async () => {
    const tok = await mustSession(f.tb, f.owner, 'gw:tickets');
    assert.equal((await f.call('/u/tickets/tickets/1', { token: tok })).status, 200);
    assert.equal((await f.call('/u/tickets/tickets/2', { token: tok })).status, 200);
    assert.equal((await f.call('/u/tickets/admin', { token: tok })).status, 403);
    assert.equal((await f.call('/u/tickets/tickets/3')).status, 401);
    const release = holdStreams(f.upstream, '/api/stream');
    const reader = await openStream(`${f.gw.url}/u/tickets/stream`, tok);
    try {
      await f.tb.b.issuance.idle();
      assert.deepEqual(await (await fetch(`${f.gw.url}/healthz`)).json(), { ok: true, open: { calls: 1, tunnels: 0, upstreams: { tickets: 1 } } });

      const j = await cli(env, 'status', '--json');
      assert.equal(j.code, 0, j.err);
      const g = JSON.parse(j.out).gateway;
      assert.equal(g.url, f.gw.url);
      assert.equal(g.reachable, true);
      assert.deepEqual(g.open, { calls: 1, tunnels: 0, upstreams: { tickets: 1 } });
      assert.deepEqual(g.upstreams, [{ upstream: 'tickets', calls: 3, allowed: 2, refused: 1 }]);
      assert.deepEqual(g.egress, []);
      // The call without a token names no agent: a deny row of its own, counted apart.
      assert.equal(g.anonymous_refusals, 1);

      const t = await cli(env, 'status');
      assert.equal(t.code, 0, t.err);
      assert.match(
        t.out,
        /Gateway \(traffic in the last hour, from the audit log\)\nUPSTREAM\s+CALLS\s+ALLOWED\s+REFUSED\s+OPEN NOW\ntickets\s+3\s+2\s+1\s+1\n/,
      );
      assert.match(t.out, /refused before any agent was known \(no token, a forged one\): 1\n/);
      assert.ok(t.out.includes(`open now at ${f.gw.url}: 1 call(s), 0 tunnel(s)\n`), t.out);
    } finally {
      await reader.cancel().catch(() => {});
      release();
    }
  });

  it('says the gateway is not reachable when nothing answers at CORDON_GATEWAY_URL (and still exits 0)', async () => {
    const down = { ...env, CORDON_GATEWAY_URL: `http://127.0.0.1:${await closedPort()}` };
    const t = await cli(down, 'status');
    assert.equal(t.code, 0, t.err);
    assert.match(t.out, /gateway not reachable at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    const j = JSON.parse((await cli(down, 'status', '--json')).out).gateway;
    assert.equal(j.reachable, false);
    assert.equal(j.open, null);
    assert.equal(j.unreachable, 'ECONNREFUSED');
  });
});
