import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { gatewayFixture, TICKETS_KEY, type GatewayFixture } from './gateway.kit.ts';
import { createHash } from 'node:crypto';
import { auditHead, auditSince, claimsOf, dpopKey, dpopProof, mustDelegate, mustSession, session } from './delegation.kit.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { main } from '../src/cli/main.ts';
import type { Io } from '../src/cli/output.ts';

/** A raw HTTP/1.1 request (fetch would normalise dot segments and encodings away before sending). */
function raw(url: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest({ host: u.hostname, port: u.port, path, method, headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Waits until `f` holds, driven by the gateway's own feed poll (an event, not a fixed sleep). */
async function until(f: () => Promise<boolean>, what: string, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await f())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function cli(env: Record<string, string>, ...argv: string[]): Promise<number> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  const io: Io = { out: () => {}, err: () => {} };
  try {
    return await main(argv, io);
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

for (const db of ['sqlite', 'postgres'] as const) {
  describe(`gateway reverse mode (${db})`, function () {
    this.timeout(20_000);
    let f: GatewayFixture;
    before(async () => {
      f = await gatewayFixture({ pg: db === 'postgres' });
    });
    after(async () => {
      await f?.stop();
    });
    beforeEach(() => {
      f.upstream.received.length = 0;
    });

    it('forwards an allowed call with the injected credential and without the caller’s token, cookies or AWS headers; audits it', async () => {
      const tok = await mustSession(f.tb, f.owner, 'gw:tickets');
      const head = await auditHead(f.tb.b);
      const r = await f.call('/u/tickets/tickets/42?x=1', { token: tok, headers: { cookie: 'sid=abc', 'x-amz-security-token': 'nope', 'x-trace': 't1' } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, { ok: true, path: '/api/tickets/42?x=1' });
      assert.equal(f.upstream.received.length, 1);
      const sent = f.upstream.received[0];
      assert.equal(sent.headers.authorization, `Bearer ${TICKETS_KEY}`);
      assert.equal(sent.headers.cookie, undefined);
      assert.equal(sent.headers['x-amz-security-token'], undefined);
      assert.equal(sent.headers['x-trace'], 't1');
      assert.ok(!JSON.stringify(sent.headers).includes(tok), 'the agent token never reaches the upstream');
      await f.gw.context.audit.idle();
      const rows = (await auditSince(f.tb.b, head)).filter((x) => x.event === 'gateway.call');
      assert.equal(rows.length, 1);
      assert.equal(rows[0].decision, 'allow');
      assert.equal(rows[0].agent_id, f.owner.id);
      assert.equal(rows[0].sid, claimsOf(tok).sid);
      assert.equal(rows[0].params.upstream, 'tickets');
      assert.equal(rows[0].params.rule, 'read');
      assert.equal(rows[0].params.status, 200);
      assert.equal(rows[0].params.path, '/tickets/42');
      assert.match(rows[0].params.credential_id, /^crd_/);
      const all = JSON.stringify(await auditSince(f.tb.b, head));
      assert.ok(!all.includes(TICKETS_KEY) && !all.includes(tok), 'neither the secret nor the token is in the audit log');
    });

    it('refuses a missing token with 401 and a Bearer challenge, and forwards nothing', async () => {
      const r = await f.call('/u/tickets/tickets/1');
      assert.equal(r.status, 401);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="cordon"');
      assert.equal(r.body.error, 'invalid_token');
      assert.equal(f.upstream.received.length, 0);
    });

    it('refuses a call outside every rule (403 naming it) and a scope the token lacks (403 naming the scope); both audited', async () => {
      const tok = await mustSession(f.tb, f.owner, 'gw:tickets/read');
      const head = await auditHead(f.tb.b);
      const outside = await f.call('/u/tickets/admin/users', { token: tok });
      assert.equal(outside.status, 403);
      assert.equal(outside.body.error, 'access_denied');
      assert.match(outside.body.error_description, /no rule of upstream tickets allows GET \/admin\/users/);
      const lacking = await f.call('/u/tickets/tickets/7/comments', { token: tok, method: 'POST', body: '{"text":"hi"}' });
      assert.equal(lacking.status, 403);
      assert.match(lacking.body.error_description, /gw:tickets\/comment/);
      assert.match(lacking.headers.get('www-authenticate') ?? '', /insufficient_scope.*scope="gw:tickets\/comment"/);
      assert.equal(f.upstream.received.length, 0);
      await f.gw.context.audit.idle();
      const rows = (await auditSince(f.tb.b, head)).filter((x) => x.event === 'gateway.call');
      assert.deepEqual(
        rows.map((x) => [x.decision, x.params.reason_tag, x.agent_id]),
        [
          ['deny', 'no_rule', f.owner.id],
          ['deny', 'gw_not_in_scope', f.owner.id],
        ],
      );
    });

    it('a sub-agent delegated gw:tickets/read may read but not comment', async () => {
      const root = await mustSession(f.tb, f.owner, 'gw:tickets');
      const sub = await mustDelegate(f.tb, f.owner, root, f.helper, 'gw:tickets/read');
      assert.equal((await f.call('/u/tickets/tickets/3', { token: sub })).status, 200);
      const r = await f.call('/u/tickets/tickets/3/comments', { token: sub, method: 'POST', body: 'x' });
      assert.equal(r.status, 403);
      assert.match(r.body.error_description, /gw:tickets\/comment/);
      assert.equal(f.upstream.received.filter((x) => x.method === 'POST').length, 0);
    });

    it('refuses an expired token, and a session revoked here or from the CLI (seen within the feed poll)', async () => {
      const a = await mustSession(f.tb, f.owner, 'gw:tickets');
      assert.equal((await f.call('/u/tickets/tickets/1', { token: a })).status, 200);
      await revokeSession(f.tb.b, claimsOf(a).sid, { actor: 'test', via: 'test' });
      const r1 = await f.call('/u/tickets/tickets/1', { token: a });
      assert.equal(r1.status, 401);
      assert.match(r1.body.error_description, /revoked/);

      // The CLI is another broker on the same database: the gateway learns of it from the feed.
      const b2 = await mustSession(f.tb, f.owner, 'gw:tickets');
      assert.equal((await f.call('/u/tickets/tickets/2', { token: b2 })).status, 200);
      const env = {
        DATABASE_URL: f.tb.b.config.databaseUrl,
        CORDON_KEY_DIR: f.tb.b.config.keyDir,
        CORDON_AUDIT_DIR: f.tb.b.config.auditDir,
        CORDON_POLICY_DIR: f.tb.b.config.policyDir,
        CORDON_LOG_LEVEL: 'silent',
      };
      assert.equal(await cli(env, 'revoke', '--session', claimsOf(b2).sid, '--json'), 0);
      await until(async () => (await f.call('/u/tickets/tickets/2', { token: b2 })).status === 401, 'the CLI revocation to reach the gateway');

      const c = await mustSession(f.tb, f.owner, 'gw:tickets');
      f.tb.clock.advance(11 * 60_000 + f.tb.b.config.clockSkewSec * 1000);
      const r3 = await f.call('/u/tickets/tickets/3', { token: c });
      assert.equal(r3.status, 401);
      assert.match(r3.body.error_description, /expired/);
      f.upstream.received.length = 0;
      assert.equal((await f.call('/u/tickets/tickets/3', { token: a })).status, 401);
      assert.equal(f.upstream.received.length, 0);
    });

    it('refuses dot segments and encoded slashes with 400 and never forwards them', async () => {
      const tok = await mustSession(f.tb, f.owner, 'gw:tickets');
      for (const p of [
        '/u/tickets/tickets/../admin',
        '/u/tickets/tickets/%2e%2e/admin',
        '/u/tickets/tickets/1%2fcomments',
        '/u/tickets/tickets//1',
        '/u/tickets/tickets/%2E%2E',
      ]) {
        const r = await raw(f.gw.url, p, { authorization: `Bearer ${tok}` });
        assert.equal(r.status, 400, p);
        assert.equal(r.body.error, 'invalid_request', p);
      }
      assert.equal(f.upstream.received.length, 0);
    });

    it('answers 404 for an unknown upstream, 413 past the body cap, 504 for a hung upstream, 502 for a reset, and keeps serving', async () => {
      const tok = await mustSession(f.tb, f.owner, 'gw:tickets');
      assert.equal((await f.call('/u/nope/x', { token: tok })).status, 404);
      const big = await f.call('/u/tickets/tickets/1/comments', { token: tok, method: 'POST', body: 'x'.repeat(4096) });
      assert.equal(big.status, 413);
      const saved = f.upstream.answer;
      try {
        f.upstream.answer = () => {}; // never answers
        const hung = await f.call('/u/tickets/tickets/1', { token: tok });
        assert.equal(hung.status, 504);
        assert.equal(hung.body.error, 'bad_gateway');
        f.upstream.answer = (_req, res) => res.socket?.destroy();
        const reset = await f.call('/u/tickets/tickets/1', { token: tok });
        assert.equal(reset.status, 502);
      } finally {
        f.upstream.answer = saved;
      }
      assert.equal((await f.call('/u/tickets/tickets/1', { token: tok })).status, 200);
    });

    it('streams SSE as it comes, and cuts the stream when the session is revoked', async () => {
      const tok = await mustSession(f.tb, f.owner, 'gw:tickets');
      const { closed, restore } = f.upstream.holdStreams();
      try {
        const r = await fetch(`${f.gw.url}/u/tickets/stream`, { headers: { authorization: `Bearer ${tok}` } });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get('content-type'), 'text/event-stream');
        const reader = r.body!.getReader();
        const first = await reader.read();
        assert.equal(Buffer.from(first.value!).toString(), 'data: first\n\n');
        await revokeSession(f.tb.b, claimsOf(tok).sid, { actor: 'test', via: 'test' });
        await closed; // the gateway hung up on the upstream
        await assert.rejects(
          (async () => {
            for (;;) if ((await reader.read()).done) throw new Error('ended without an error');
          })(),
        );
      } finally {
        restore();
      }
    });

    it('a DPoP-bound token needs Authorization: DPoP and a proof over the gateway URL of the call (a bad proof is 401)', async () => {
      const k = await dpopKey();
      const iat = () => Math.floor(f.tb.clock.now() / 1000);
      const t = await session(f.tb, f.owner, 'gw:tickets', {}, { dpop: await dpopProof(k, 'POST', `${f.tb.url}/token`, { iat: iat() }) });
      assert.equal(t.status, 200, JSON.stringify(t.body));
      const tok: string = t.body.access_token;
      const htu = `${f.gw.url}/u/tickets/tickets/5`;
      const ath = createHash('sha256').update(tok).digest('base64url');
      assert.equal((await f.call('/u/tickets/tickets/5', { token: tok })).status, 401, 'a bound token presented as Bearer');
      const ok = await f.call('/u/tickets/tickets/5', { headers: { authorization: `DPoP ${tok}`, dpop: await dpopProof(k, 'GET', htu, { iat: iat(), ath }) } });
      assert.equal(ok.status, 200, ok.text);
      const other = await f.call('/u/tickets/tickets/5', {
        headers: { authorization: `DPoP ${tok}`, dpop: await dpopProof(k, 'GET', `${f.gw.url}/u/tickets/tickets/6`, { iat: iat(), ath }) },
      });
      assert.equal(other.status, 401);
      assert.equal(other.body.error, 'invalid_dpop_proof');
      assert.match(other.headers.get('www-authenticate') ?? '', /^DPoP .*error="invalid_dpop_proof"/);
    });

    it('leaves an audit chain that verifies', async () => {
      await f.gw.context.audit.idle();
      const v = await verifyAudit(f.tb.b.db);
      assert.ok(v.ok, JSON.stringify(v));
    });
  });
}
