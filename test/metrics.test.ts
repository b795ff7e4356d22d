import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import express from 'express';
import pino from 'pino';
import { loadConfig } from '../src/config/index.ts';
import { startBroker } from '../src/runtime.ts';
import { mountMetrics } from '../src/http/metrics.ts';
import { recordBackendError, metricsFor } from '../src/observability/metrics.ts';
import { mountRequestLogging, requestLogger } from '../src/http/logging.ts';
import { registerAgent } from '../src/agents/registry.ts';
import { CordonAgent } from '../src/index.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { claimsOf, mustSession } from './delegation.kit.ts';
import { credFixture, type CredFixture } from './credentials.kit.ts';

/**
 * A strict parser for the Prometheus text exposition format 0.0.4: every line must be a
 * HELP, a TYPE or a sample; names, label names and escapes must be valid; a family's TYPE comes
 * before its samples and once only; no series twice; histogram buckets cumulative and ending in
 * +Inf equal to _count.
 */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
function parsePrometheus(text: string): { types: Map<string, string>; samples: Sample[] } {
  const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
  const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  const seen = new Set<string>();
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  const lines = text.split('\n').slice(0, -1);
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${line}`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (!m) {
        assert.match(line, /^# /, where); // plain comments are allowed
        return;
      }
      assert.match(m[2], NAME, where);
      if (m[1] === 'TYPE') {
        assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]), where);
        assert.ok(!types.has(m[2]), `TYPE twice for ${m[2]}`);
        assert.ok(!samples.some((s) => familyOf(s.name, types) === m[2]), `TYPE after samples for ${m[2]}`);
        types.set(m[2], m[3]);
      } else {
        assert.ok(!helps.has(m[2]), `HELP twice for ${m[2]}`);
        assert.doesNotMatch(m[3], /\\[^\\n]/, `bad escape in HELP: ${where}`);
        helps.add(m[2]);
      }
      return;
    }
    let j = 0;
    while (j < line.length && /[a-zA-Z0-9_:]/.test(line[j])) j++;
    const name = line.slice(0, j);
    assert.match(name, NAME, where);
    const labels: Record<string, string> = {};
    if (line[j] === '{') {
      j++;
      while (line[j] !== '}') {
        let k = j;
        while (/[a-zA-Z0-9_]/.test(line[k])) k++;
        const ln = line.slice(j, k);
        assert.match(ln, LABEL, where);
        assert.equal(line[k], '=', where);
        assert.equal(line[k + 1], '"', where);
        k += 2;
        let v = '';
        for (;;) {
          const c = line[k];
          assert.ok(c !== undefined, `unterminated label value: ${where}`);
          if (c === '\\') {
            const n = line[k + 1];
            assert.ok(n === '\\' || n === '"' || n === 'n', `bad escape: ${where}`);
            v += n === 'n' ? '\n' : n;
            k += 2;
            continue;
          }
          if (c === '"') break;
          v += c;
          k++;
        }
        assert.ok(!(ln in labels), `label twice: ${where}`);
        labels[ln] = v;
        k++;
        if (line[k] === ',') k++;
        j = k;
      }
      j++;
    }
    const rest = line.slice(j);
    const m = /^ (\S+)( -?\d+)?$/.exec(rest);
    assert.ok(m, `value: ${where}`);
    const raw = m[1];
    // Values as Prometheus reads them (Go's strconv.ParseFloat: NaN and Inf in any letter case; prom-client prints `Nan`).
    assert.match(raw, /^([+-]?(nan|inf|infinity)|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/i, where);
    const lower = raw.toLowerCase().replace(/^\+/, '');
    const value = lower.endsWith('nan') ? NaN : lower.startsWith('-inf') ? -Infinity : lower.startsWith('inf') ? Infinity : Number(raw);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(key), `series twice: ${where}`);
    seen.add(key);
    assert.ok(types.has(familyOf(name, types)), `sample before its TYPE: ${where}`);
    samples.push({ name, labels, value });
  });
  // Histograms: cumulative buckets, +Inf = _count.
  for (const [fam, type] of types) {
    if (type !== 'histogram') continue;
    const groups = new Map<string, Sample[]>();
    for (const s of samples.filter((x) => x.name === `${fam}_bucket`)) {
      const { le, ...rest } = s.labels;
      assert.ok(le !== undefined, `${fam}_bucket without le`);
      const g = JSON.stringify(Object.entries(rest).sort());
      groups.set(g, [...(groups.get(g) ?? []), s]);
    }
    for (const [g, bs] of groups) {
      let prev = -Infinity;
      let prevCount = 0;
      for (const b of bs) {
        const le = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
        assert.ok(le > prev, `${fam} buckets not increasing`);
        assert.ok(b.value >= prevCount, `${fam} buckets not cumulative`);
        prev = le;
        prevCount = b.value;
      }
      assert.equal(prev, Infinity, `${fam} has no +Inf bucket`);
      const count = samples.find((s) => s.name === `${fam}_count` && JSON.stringify(Object.entries(s.labels).sort()) === g);
      assert.ok(count, `${fam}_count missing for ${g}`);
      assert.equal(count.value, prevCount, `${fam}_count ≠ +Inf bucket`);
    }
  }
  return { types, samples };
}

function familyOf(name: string, types: Map<string, string>): string {
  if (types.has(name)) return name;
  for (const suf of ['_bucket', '_sum', '_count', '_total', '_created']) {
    if (name.endsWith(suf) && types.has(name.slice(0, -suf.length))) return name.slice(0, -suf.length);
  }
  return name;
}

const value = (samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined =>
  samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

describe('metrics: /metrics in the Prometheus text format', () => {
  let t: TestBroker;
  let orch: { id: string; secret: string };
  let worker: { id: string; secret: string };

  before(async () => {
    t = await startTestBroker({ policyDir: resolve('examples/policies'), ext: { before: [mountMetrics] } });
    orch = await t.register('orch', 'example-orchestrator');
    worker = await t.register('worker', 'example-worker');
  });
  after(async () => {
    await t?.close();
  });

  it('counts issued and refused decisions by event and reason, times routes, gauges live sessions and tokens, and parses strictly', async () => {
    const a = new CordonAgent({ issuer: t.url, clientId: orch.id, clientSecret: orch.secret, clock: t.clock });
    await a.startSession({ scope: 'tickets:read', audience: 'https://tickets.example' });
    await a.delegate({ to: worker.id, scope: 'tickets:read' });
    const refused = await postForm(
      `${t.url}/token`,
      { grant_type: 'client_credentials', scope: 'admin:everything' },
      { authorization: basic(orch.id, orch.secret) },
    );
    assert.equal(refused.status, 400);
    const badClient = await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'tickets:read' }, { authorization: basic(orch.id, 'wrong') });
    assert.equal(badClient.status, 401);
    await postForm(`${t.url}/introspect`, { token: await a.token() }, { authorization: basic(orch.id, orch.secret) });
    recordBackendError(t.b, 'vault', 'sealed');
    recordBackendError(t.b, 'aws-sts', 'Some Free Text: with spaces');

    const r = await fetch(`${t.url}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const { types, samples } = parsePrometheus(await r.text());

    assert.equal(types.get('cordon_issued_total') ?? types.get('cordon_issued'), 'counter');
    assert.equal(value(samples, 'cordon_issued_total', { event: 'session.open' }), 1);
    assert.equal(value(samples, 'cordon_issued_total', { event: 'delegation.issue' }), 1);
    assert.equal(value(samples, 'cordon_refused_total', { event: 'session.open', reason: 'scope_not_allowed' }), 1, 'labelled by the stable reason tag');
    assert.equal(value(samples, 'cordon_refused_total', { event: 'token', reason: 'invalid_client' }), 1);
    assert.equal(value(samples, 'cordon_live_sessions'), 1);
    assert.equal(value(samples, 'cordon_live_tokens'), 2);
    assert.equal(value(samples, 'cordon_backend_errors_total', { provider: 'vault', reason: 'sealed' }), 1);
    assert.equal(value(samples, 'cordon_backend_errors_total', { provider: 'aws-sts', reason: 'other' }), 1, 'free text never becomes a label');
    assert.equal(types.get('cordon_http_request_duration_seconds'), 'histogram');
    assert.ok(value(samples, 'cordon_http_request_duration_seconds_count', { method: 'post', route: '/token', status: '200' })! >= 2);
    assert.equal(value(samples, 'cordon_http_request_duration_seconds_count', { method: 'post', route: '/token', status: '401' }), 1);
    assert.equal(value(samples, 'cordon_http_request_duration_seconds_count', { method: 'post', route: '/introspect', status: '200' }), 1);

    // Unmatched paths collapse into one series (no cardinality from the URL).
    for (const p of ['/nope/1', '/nope/2', '/x?y=z']) await fetch(`${t.url}${p}`);
    const again = parsePrometheus(await (await fetch(`${t.url}/metrics`)).text());
    const routes = new Set(again.samples.filter((s) => s.name === 'cordon_http_request_duration_seconds_count').map((s) => s.labels.route));
    assert.ok(!routes.has('/nope/1') && routes.has('unmatched'), [...routes].join(','));

    // Revocation moves the gauges.
    await a.close();
    const after = parsePrometheus(await (await fetch(`${t.url}/metrics`)).text());
    assert.equal(value(after.samples, 'cordon_live_tokens'), 0);
    // What the endpoint printed is what the registry holds.
    const json = await metricsFor(t.b).registry.getMetricsAsJSON();
    const issued = json.find((m) => m.name === 'cordon_issued_total')!;
    assert.equal(issued.values.find((v) => v.labels.event === 'session.open')!.value, 1);
  });

  it('with CORDON_METRICS_TOKEN set, /metrics wants that bearer token: 401 JSON with WWW-Authenticate otherwise; a weak token stops start-up', async () => {
    const token = 'f'.repeat(16) + '0123456789abcdef0123456789abcdef';
    const guarded = await startTestBroker({ policyDir: resolve('examples/policies'), env: { CORDON_METRICS_TOKEN: token }, ext: { before: [mountMetrics] } });
    try {
      for (const authorization of [
        undefined,
        'Bearer wrong',
        `Basic ${Buffer.from(`x:${token}`).toString('base64')}`,
        `Bearer ${token}x`,
        `Bearer ${token} extra`,
      ]) {
        const r = await fetch(`${guarded.url}/metrics`, { headers: authorization ? { authorization } : {} });
        assert.equal(r.status, 401, String(authorization));
        assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer /);
        assert.equal((await r.json()).error, 'invalid_token');
      }
      const ok = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(ok.status, 200);
      assert.ok(parsePrometheus(await ok.text()).samples.length > 0);
    } finally {
      await guarded.close();
    }
    assert.throws(() => loadConfig({ CORDON_METRICS_TOKEN: 'short' }), /^ConfigError: CORDON_METRICS_TOKEN: must be 32 to 512 characters/);
    assert.equal(loadConfig({ CORDON_METRICS_TOKEN: '' }).metricsToken, undefined, 'empty means off');
  });

  it('startBroker wires metrics (with process metrics) and request logging into the running broker', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-metrics-'));
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const config = loadConfig({
      CORDON_ISSUER: 'http://127.0.0.1:1',
      DATABASE_URL: `sqlite://${join(dir, 'db.sqlite')}`,
      CORDON_POLICY_DIR: resolve('examples/policies'),
      CORDON_KEY_DIR: join(dir, 'keys'),
      CORDON_AUDIT_DIR: join(dir, 'audit'),
      CORDON_LOG_LEVEL: 'info',
    });
    const rb = await startBroker(config, { port: 0, gatewayPort: 0, log: pino({ level: 'info' }, sink) });
    try {
      const reg = await registerAgent(rb.b, { name: 'logged', policy: 'example-worker', auth: 'secret' });
      const secret = reg.clientSecret!;
      const tok = await postForm(
        `${rb.url}/token`,
        { grant_type: 'client_credentials', scope: 'tickets:read', client_secret: secret, client_id: reg.agent.id },
        { 'x-request-id': 'req-abc.123' },
      );
      // The issuer in config does not match the port, but the token endpoint answers all the same.
      assert.equal(tok.headers.get('x-request-id'), 'req-abc.123');
      const m = await fetch(`${rb.url}/metrics`, { headers: { authorization: 'Bearer secret-looking-value', 'x-request-id': 'bad id with spaces' } });
      assert.match(m.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/, 'a malformed request id is replaced');
      const text = await m.text();
      const { samples } = parsePrometheus(text);
      assert.ok(
        samples.some((s) => s.name.startsWith('cordon_process_')),
        'process metrics are on',
      );
      assert.ok(value(samples, 'cordon_http_request_duration_seconds_count', { route: '/token' })! >= 1);
      await new Promise((r) => setTimeout(r, 20));
      const reqLines = lines.filter((l) => l.msg === 'request completed');
      const tokenLine = reqLines.find((l) => (l.req as { url: string }).url === '/token');
      assert.ok(tokenLine, JSON.stringify(lines.slice(-5)));
      assert.equal(tokenLine.req_id, 'req-abc.123');
      assert.equal((tokenLine.res as { statusCode: number }).statusCode, tok.status);
      assert.equal(typeof tokenLine.responseTime, 'number');
      const all = JSON.stringify(lines);
      assert.ok(!all.includes(secret), 'no client secret in logs');
      assert.ok(!all.includes('secret-looking-value'), 'no Authorization header in logs');
      assert.ok(!all.toLowerCase().includes('"authorization"'), 'no header names either');
      if (tok.body.access_token) assert.ok(!all.includes(tok.body.access_token), 'no token in logs');
    } finally {
      await rb.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('request logging never records headers, bodies or query strings', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino(
      { level: 'info' },
      new Writable({
        write(c, _e, cb) {
          lines.push(JSON.parse(String(c)));
          cb();
        },
      }),
    );
    const app = express();
    app.use(requestLogger(log));
    app.post('/x', express.text({ type: '*/*' }), (req, res) => {
      assert.ok(res.locals.requestId);
      res.status(500).send('boom');
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as { port: number }).port;
    try {
      const r = await fetch(`http://127.0.0.1:${port}/x?token=qs-secret`, {
        method: 'POST',
        headers: { authorization: 'DPoP hdr-secret', dpop: 'proof-secret', cookie: 'c=cookie-secret' },
        body: 'client_secret=body-secret',
      });
      assert.equal(r.status, 500);
      await new Promise((res) => setTimeout(res, 20));
      const s = JSON.stringify(lines);
      for (const secret of ['qs-secret', 'hdr-secret', 'proof-secret', 'cookie-secret', 'body-secret'])
        assert.ok(!s.includes(secret), `${secret} leaked: ${s}`);
      assert.equal(lines.length, 1);
      assert.equal(lines[0].msg, 'request failed');
      assert.equal(lines[0].level, 50);
      assert.equal((lines[0].req as { url: string }).url, '/x');
    } finally {
      server.close();
    }
    void mountRequestLogging;
  });
});

describe('metrics: backend errors counted where provider errors are handled', () => {
  let f: CredFixture;
  before(async () => {
    f = await credFixture({ timeoutMs: 300 });
  });
  after(async () => {
    await f?.stop();
  });

  it('a failed issue and a failed revocation count by provider and kind; aws-sts_* refusal reasons keep their label', async () => {
    const m = metricsFor(f.tb.b);
    const a = await f.agent('metrics-owner', 'creds-owner');
    const tok = await mustSession(f.tb, a, 'cred:vault-token cred:s3-iam');
    f.vault.sealed = true;
    assert.equal((await f.cred('vault-token', tok)).status, 503);
    f.vault.sealed = false;
    f.sts.failNext(400, 'Throttling', 'Rate exceeded', 'AssumeRole');
    assert.equal((await f.cred('s3-iam', tok)).status, 503);
    assert.equal((await f.cred('s3-iam', tok)).status, 200);
    f.sts.failNext(403, 'AccessDenied', 'User is not authorized to perform: iam:PutRolePolicy', 'PutRolePolicy');
    await revokeSession(f.tb.b, claimsOf(tok).sid, { actor: 'admin', via: 'test' });

    const json = await m.registry.getMetricsAsJSON();
    const count = (name: string, labels: Record<string, string>) =>
      json.find((x) => x.name === name)?.values.find((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))?.value ?? 0;
    assert.equal(count('cordon_backend_errors_total', { provider: 'vault', reason: 'sealed' }), 1);
    assert.equal(count('cordon_backend_errors_total', { provider: 'aws-sts', reason: 'throttled' }), 1);
    assert.equal(count('cordon_backend_errors_total', { provider: 'aws-sts', reason: 'refused' }), 1, 'the IAM deny IAM refused');
    assert.equal(count('cordon_refused_total', { event: 'credential.issue', reason: 'aws-sts_throttled' }), 1);
    assert.equal(count('cordon_refused_total', { event: 'credential.issue', reason: 'vault_sealed' }), 1);
  });
});
