import assert from 'node:assert/strict';
import { decodeJwt } from 'jose';
import { setAgentEnabled } from '../src/agents/registry.ts';
import { revokeAgent, revokeSession } from '../src/revocation/revoke.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

type Agent = { id: string; secret: string };

/**
 * Every refusal of session start with its RFC error code, renewal inside a session, TTL rules and
 * expiry on the injected clock, and the audit row each refusal leaves.
 */
describe('core: refusals, renewal, TTL and expiry', () => {
  let t: TestBroker;
  let summarizer: Agent; // support-summarizer: token_ttl 10m, session_ttl 1h, audience https://tickets.internal
  let reader: Agent; // doc-reader: token_ttl 5m, session_ttl 1h, no audiences

  before(async () => {
    t = await startTestBroker();
    summarizer = await t.register('summarizer', 'support-summarizer');
    reader = await t.register('reader', 'doc-reader');
  });
  after(async () => {
    await t?.close();
  });

  const token = (a: Agent, form: Record<string, string | string[]>) =>
    postForm(`${t.url}/token`, { grant_type: 'client_credentials', ...form }, { authorization: basic(a.id, a.secret) });
  const introspect = (tok: string, as: Agent = summarizer) => postForm(`${t.url}/introspect`, { token: tok }, { authorization: basic(as.id, as.secret) });
  const maxSeq = async (): Promise<number> => Number((await t.b.db('audit').max({ m: 'seq' }).first())?.m ?? 0);
  /** Deny rows written after `seq`. */
  const denialsAfter = async (seq: number) => t.b.db('audit').where('seq', '>', seq).andWhere({ decision: 'deny' }).orderBy('seq');

  /** Asks, expects the refusal, and checks the audit row it left names the agent and the reason. */
  async function refused(
    a: Agent,
    form: Record<string, string | string[]>,
    expect: { status: number; error: string; reason?: RegExp },
  ): Promise<Record<string, unknown>> {
    const before = await maxSeq();
    const tokensBefore = Number((await t.b.db('tokens').count({ n: '*' }).first())?.n);
    const r = await token(a, form);
    assert.equal(r.status, expect.status, JSON.stringify(r.body));
    assert.equal(r.body.error, expect.error, JSON.stringify(r.body));
    assert.equal(typeof r.body.error_description, 'string');
    assert.equal(r.body.access_token, undefined);
    const rows = await denialsAfter(before);
    assert.equal(rows.length, 1, `one deny row, got ${JSON.stringify(rows)}`);
    const row = rows[0];
    assert.equal(row.event, 'deny');
    assert.equal(row.agent_id, a.id, 'the deny row names the agent');
    assert.match(row.reason, new RegExp(`^${expect.error}`), `deny reason starts with the error code: ${row.reason}`);
    if (expect.reason) assert.match(row.reason, expect.reason);
    assert.equal(Number((await t.b.db('tokens').count({ n: '*' }).first())?.n), tokensBefore, 'no token was recorded');
    return row;
  }

  describe('scope and audience', () => {
    it('scope outside the policy → invalid_scope, and the row names the scope', async () => {
      const row = await refused(summarizer, { scope: 'tickets:read docs:write' }, { status: 400, error: 'invalid_scope', reason: /docs:write/ });
      assert.match(String(row.params), /docs:write/, 'what was asked is recorded');
    });

    it('a wildcard that would widen the policy → invalid_scope', async () => {
      await refused(summarizer, { scope: 'tickets:*' }, { status: 400, error: 'invalid_scope' });
    });

    it('missing scope → invalid_scope', async () => {
      await refused(summarizer, {}, { status: 400, error: 'invalid_scope' });
    });

    it('empty scope → invalid_scope', async () => {
      await refused(summarizer, { scope: '' }, { status: 400, error: 'invalid_scope' });
    });

    it('audience not allowed by the policy → invalid_target (resource and audience alike)', async () => {
      await refused(summarizer, { scope: 'tickets:read', resource: 'https://evil.example' }, { status: 400, error: 'invalid_target', reason: /evil\.example/ });
      await refused(summarizer, { scope: 'tickets:read', audience: 'https://evil.example' }, { status: 400, error: 'invalid_target' });
      await refused(
        summarizer,
        { scope: 'tickets:read', resource: ['https://tickets.internal', 'https://evil.example'] },
        { status: 400, error: 'invalid_target' },
      );
      // A policy with no audiences allows none.
      await refused(reader, { scope: 'docs:read', resource: 'https://tickets.internal' }, { status: 400, error: 'invalid_target' });
    });

    it('the allowed audience and scope are granted (the refusals above are not blanket)', async () => {
      const r = await token(summarizer, { scope: 'tickets:read', resource: 'https://tickets.internal' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(decodeJwt(r.body.access_token).aud, 'https://tickets.internal');
    });
  });

  describe('agent status', () => {
    it('a disabled agent → invalid_client; enabled again it is served', async () => {
      const a = await t.register('to-disable', 'doc-reader');
      assert.equal((await token(a, { scope: 'docs:read' })).status, 200);
      await setAgentEnabled(t.b, a.id, false, 'test');
      await refused(a, { scope: 'docs:read' }, { status: 401, error: 'invalid_client', reason: /disabled/ });
      await setAgentEnabled(t.b, a.id, true, 'test');
      assert.equal((await token(a, { scope: 'docs:read' })).status, 200);
    });

    it("a disabled agent's live token introspects inactive", async () => {
      const a = await t.register('to-disable-2', 'doc-reader');
      const r = await token(a, { scope: 'docs:read' });
      assert.equal((await introspect(r.body.access_token)).body.active, true);
      await setAgentEnabled(t.b, a.id, false, 'test');
      assert.deepEqual((await introspect(r.body.access_token)).body, { active: false });
    });

    it('a revoked agent → invalid_client, and its live tokens go inactive', async () => {
      const a = await t.register('to-revoke', 'doc-reader');
      const r = await token(a, { scope: 'docs:read' });
      assert.equal(r.status, 200);
      await revokeAgent(t.b, a.id, { actor: 'test', via: 'test' });
      await refused(a, { scope: 'docs:read' }, { status: 401, error: 'invalid_client' });
      assert.deepEqual((await introspect(r.body.access_token)).body, { active: false });
    });

    it('an unknown client and a wrong secret → 401 invalid_client', async () => {
      const r1 = await token({ id: 'agt_doesnotexist', secret: 'x' }, { scope: 'docs:read' });
      assert.equal(r1.status, 401);
      assert.equal(r1.body.error, 'invalid_client');
      await refused({ id: reader.id, secret: `${reader.secret}x` }, { scope: 'docs:read' }, { status: 401, error: 'invalid_client' });
    });
  });

  describe('renewal with session=<sid>', () => {
    it('works while the session lives: same sid, same task, fresh jti', async () => {
      const first = await token(summarizer, { scope: 'tickets:read crm.contacts:read', task: 'T-1' });
      assert.equal(first.status, 200);
      const c1 = decodeJwt(first.body.access_token);
      const again = await token(summarizer, { scope: 'tickets:read', session: first.body.sid });
      assert.equal(again.status, 200, JSON.stringify(again.body));
      const c2 = decodeJwt(again.body.access_token);
      assert.equal(c2.sid, c1.sid);
      assert.equal(c2.task, 'T-1');
      assert.notEqual(c2.jti, c1.jti);
      assert.equal(again.body.session_expires_at, first.body.session_expires_at);
      // Renewal cannot widen the session's task scope, even within the policy.
      await refused(summarizer, { scope: 'cred:tickets-db', session: first.body.sid }, { status: 400, error: 'invalid_scope' });
    });

    it("keeps the session's audience and refuses one the session was not opened for", async () => {
      const first = await token(summarizer, { scope: 'tickets:read', audience: 'https://tickets.internal' });
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const again = await token(summarizer, { scope: 'tickets:read', session: first.body.sid });
      assert.equal(decodeJwt(again.body.access_token).aud, 'https://tickets.internal', 'a renewal inherits the audience');
      const plain = await token(summarizer, { scope: 'tickets:read' });
      await refused(
        summarizer,
        { scope: 'tickets:read', session: plain.body.sid, audience: 'https://tickets.internal' },
        { status: 400, error: 'invalid_target', reason: /outside the session/ },
      );
    });

    it('is refused with invalid_grant after the session is revoked, and the old tokens go inactive', async () => {
      const first = await token(summarizer, { scope: 'tickets:read' });
      await revokeSession(t.b, first.body.sid, { actor: 'test', via: 'test' });
      const row = await refused(summarizer, { scope: 'tickets:read', session: first.body.sid }, { status: 400, error: 'invalid_grant', reason: /revoked/ });
      assert.equal(row.sid, first.body.sid, 'the deny row names the session');
      assert.deepEqual((await introspect(first.body.access_token)).body, { active: false });
    });

    it('is refused with invalid_grant after session_ttl', async () => {
      const first = await token(summarizer, { scope: 'tickets:read' });
      t.clock.advance(60 * 60_000); // support-summarizer session_ttl: 1h
      await refused(summarizer, { scope: 'tickets:read', session: first.body.sid }, { status: 400, error: 'invalid_grant', reason: /ended|expired/ });
    });

    it("is refused with invalid_grant for another agent's session", async () => {
      const mine = await token(summarizer, { scope: 'tickets:read' });
      await refused(reader, { scope: 'tickets:read', session: mine.body.sid }, { status: 400, error: 'invalid_grant' });
    });

    it('is refused with invalid_grant for a session that never existed', async () => {
      await refused(summarizer, { scope: 'tickets:read', session: 'ses_nope' }, { status: 400, error: 'invalid_grant' });
    });
  });

  describe('token lifetime', () => {
    it('TTL = min(requested expires_in, policy token_ttl)', async () => {
      const short = await token(summarizer, { scope: 'tickets:read', expires_in: '60' });
      assert.equal(short.status, 200, JSON.stringify(short.body));
      assert.equal(short.body.expires_in, 60);
      const c = decodeJwt(short.body.access_token);
      assert.equal(c.exp! - c.iat!, 60);

      const long = await token(summarizer, { scope: 'tickets:read', expires_in: '86400' });
      assert.equal(long.body.expires_in, 600, 'capped at token_ttl 10m');
      const cl = decodeJwt(long.body.access_token);
      assert.equal(cl.exp! - cl.iat!, 600);

      const none = await token(reader, { scope: 'docs:read' });
      assert.equal(none.body.expires_in, 300, 'doc-reader token_ttl 5m is the default');
      assert.equal(Math.floor(t.clock.now() / 1000), decodeJwt(none.body.access_token).iat, 'iat comes from the injected clock');
    });

    it('a malformed expires_in is invalid_request', async () => {
      for (const v of ['0', '-5', '1.5', 'abc', '99999999999']) {
        const r = await token(summarizer, { scope: 'tickets:read', expires_in: v });
        assert.equal(r.status, 400, v);
        assert.equal(r.body.error, 'invalid_request', v);
      }
    });

    it('never outlives session_ttl: renewal near the end of a session is cut to the session end', async () => {
      const first = await token(summarizer, { scope: 'tickets:read' });
      const sessionEnd = first.body.session_expires_at as number;
      const c0 = decodeJwt(first.body.access_token);
      assert.equal(sessionEnd - c0.iat!, 3600, 'session_ttl 1h');
      t.clock.advance(55 * 60_000); // 5 minutes of session left, token_ttl is 10
      const late = await token(summarizer, { scope: 'tickets:read', session: first.body.sid, expires_in: '600' });
      assert.equal(late.status, 200, JSON.stringify(late.body));
      const c = decodeJwt(late.body.access_token);
      assert.ok(c.exp! <= sessionEnd, `exp ${c.exp} past session end ${sessionEnd}`);
      assert.ok(late.body.expires_in <= 300, `expires_in ${late.body.expires_in}`);
      assert.ok(late.body.expires_in >= 299, `expires_in ${late.body.expires_in}`);
      // Introspection agrees.
      const i = await introspect(late.body.access_token);
      assert.equal(i.body.active, true);
      assert.ok(i.body.exp <= sessionEnd);
      // The record agrees too.
      const rec = await t.b.db('tokens').where({ jti: c.jti }).first();
      assert.ok(Number(rec.expires_at) <= sessionEnd * 1000);
      // At the session's end the token is gone as well.
      t.clock.set(sessionEnd * 1000);
      assert.deepEqual((await introspect(late.body.access_token)).body, { active: false });
    });

    it('expiry: active until exp, inactive once the clock passes it (no sleeping)', async () => {
      const r = await token(summarizer, { scope: 'tickets:read', expires_in: '120' });
      const c = decodeJwt(r.body.access_token);
      t.clock.set(c.exp! * 1000 - 1000);
      assert.equal((await introspect(r.body.access_token)).body.active, true, 'one second before exp');
      t.clock.set(c.exp! * 1000);
      assert.deepEqual((await introspect(r.body.access_token)).body, { active: false }, 'at exp');
      t.clock.advance(60 * 60_000);
      assert.deepEqual((await introspect(r.body.access_token)).body, { active: false }, 'long after exp');
    });
  });

  describe('refusals at /introspect and /revoke are audited too', () => {
    it('a wrong secret at /introspect, and revoking another agent’s token: a deny row each, naming the caller, never the secret or the token', async () => {
      const tok = (await token(summarizer, { scope: 'tickets:read' })).body.access_token as string;
      let seq = await maxSeq();
      const wrong = `${summarizer.secret.slice(0, -2)}xx`;
      const bad = await postForm(`${t.url}/introspect`, { token: tok }, { authorization: basic(summarizer.id, wrong) });
      assert.equal(bad.status, 401);
      let rows = await denialsAfter(seq);
      assert.equal(rows.length, 1);
      assert.equal(rows[0].agent_id, summarizer.id, 'the client id the request claimed');
      assert.match(rows[0].reason, /^invalid_client/);
      assert.equal(JSON.parse(rows[0].params).attempted, 'introspect');
      const text = JSON.stringify(rows[0]);
      assert.ok(!text.includes(wrong) && !text.includes(tok), 'no secret and no token value in the row');

      seq = await maxSeq();
      const foreign = await postForm(`${t.url}/revoke`, { token: tok }, { authorization: basic(reader.id, reader.secret) });
      assert.equal(foreign.status, 400);
      assert.equal(foreign.body.error, 'unauthorized_client');
      rows = await denialsAfter(seq);
      assert.equal(rows.length, 1);
      assert.equal(rows[0].agent_id, reader.id, 'the authenticated caller');
      assert.match(rows[0].reason, /^unauthorized_client/);
      assert.equal(JSON.parse(rows[0].params).attempted, 'revoke');
      assert.equal((await introspect(tok)).body.active, true, 'and the token lives on');
    });
  });

  // A suite of its own so that it runs after the suites above (mocha runs a suite's own tests first).
  describe('the audit trail of all of the above', () => {
    it('the chain still verifies and holds a deny row per refusal code', async () => {
      const v = await verifyAudit(t.b.db);
      assert.equal(v.ok, true, JSON.stringify(v));
      const reasons = (await t.b.db('audit').where({ decision: 'deny' }).select('reason')).map((r) => String(r.reason));
      for (const code of ['invalid_scope', 'invalid_target', 'invalid_client', 'invalid_grant'])
        assert.ok(
          reasons.some((r) => r.startsWith(code)),
          `no ${code} deny row`,
        );
    });
  });
});
