import { Attempt } from '../src/audit/attempt.ts';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { issueBootstrapToken, redeemBootstrapToken } from '../src/sessions/bootstrap.ts';
import { setAgentEnabled } from '../src/agents/registry.ts';
import { CordonError } from '../src/errors.ts';
import {
  TT_ACCESS,
  TT_BOOTSTRAP,
  GRANT_TE,
  dpopKey,
  dpopProof,
  auditHead,
  auditSince,
  claimsOf,
  countSessions,
  countTokens,
  denialsSince,
  introspect,
  mustSession,
  register,
  token,
  type Agent,
  delegateReq,
} from './delegation.kit.ts';

describe('bootstrap tokens (secretless start-up)', function () {
  let tb: TestBroker;
  let reader: Agent;
  let planner: Agent;

  before(async () => {
    tb = await startTestBroker();
    reader = await register(tb, 'boot-reader', 'doc-reader');
    planner = await register(tb, 'boot-planner', 'research-planner');
  });
  after(() => tb.close());

  const redeem = (tok: string, extra: Record<string, string> = {}, as: Agent | null = null) =>
    token(tb, as, { grant_type: GRANT_TE, subject_token: tok, subject_token_type: TT_BOOTSTRAP, scope: 'docs:read', ...extra });

  it('issues cbt_ tokens of 256 bits, stores only their SHA-256, and audits the issue in the same breath', async () => {
    const seq = await auditHead(tb.b);
    const t = await issueBootstrapToken(tb.b, 'boot-reader', { ttlSec: 300, actor: 'test' });
    assert.match(t.token, /^cbt_[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(t.token.slice(4), 'base64url').length, 32);
    assert.equal(t.expiresAt, tb.clock.now() + 300_000);
    const row = await tb.b.db('bootstrap_tokens').where({ id: t.id }).first();
    assert.equal(row.token_hash, createHash('sha256').update(t.token).digest('hex'));
    assert.equal(row.agent_id, reader.id);
    assert.ok(!JSON.stringify(row).includes(t.token.slice(4)), 'the token value is not stored');
    const audit = await auditSince(tb.b, seq);
    assert.equal(audit.length, 1);
    assert.equal(audit[0].event, 'bootstrap.issue');
    assert.equal(audit[0].agent_id, reader.id);
    assert.equal(audit[0].params.bootstrap_id, t.id);
    assert.ok(!JSON.stringify(audit[0]).includes(t.token.slice(4)), 'the token value is not audited');
  });

  it('refuses ttl outside 1s..24h and unknown or disabled agents', async () => {
    for (const ttlSec of [0, -1, 86401, 1.5, Number.NaN]) {
      await assert.rejects(issueBootstrapToken(tb.b, reader.id, { ttlSec }), (e: CordonError) => e.code === 'invalid_request' && /ttl/.test(e.description));
    }
    await issueBootstrapToken(tb.b, reader.id, { ttlSec: 1 });
    await issueBootstrapToken(tb.b, reader.id, { ttlSec: 86400 });
    await assert.rejects(issueBootstrapToken(tb.b, 'nobody-here', { ttlSec: 60 }), (e: CordonError) => e.code === 'not_found');
    const off = await register(tb, 'boot-off', 'doc-reader');
    await setAgentEnabled(tb.b, off.id, false);
    await assert.rejects(issueBootstrapToken(tb.b, off.id, { ttlSec: 60 }), (e: CordonError) => /disabled/.test(e.description));
  });

  it('opens exactly one session through the public workload client, then is dead; the replay is refused and audited', async () => {
    const t = await issueBootstrapToken(tb.b, reader.name, { ttlSec: 300 });
    const sessionsBefore = await countSessions(tb.b);
    const r = await redeem(t.token, { task: 'T-1', expires_in: '120' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.issued_token_type, TT_ACCESS);
    assert.equal(r.body.token_type, 'Bearer');
    assert.equal(r.body.scope, 'docs:read');
    assert.equal(r.body.expires_in, 120);
    const c = claimsOf(r.body.access_token);
    assert.equal(c.client_id, reader.id);
    assert.equal(c.sub, reader.id);
    assert.equal(c.task, 'T-1');
    assert.equal(c.cordon_depth, 0);
    const s = await tb.b.db('sessions').where({ sid: c.sid }).first();
    assert.equal(s.origin, 'bootstrap');
    assert.equal(await countSessions(tb.b), sessionsBefore + 1);
    const row = await tb.b.db('bootstrap_tokens').where({ id: t.id }).first();
    assert.equal(Number(row.used_at), tb.clock.now());
    assert.equal(row.used_sid, c.sid);
    assert.equal((await introspect(tb, planner, r.body.access_token)).active, true);

    const seq = await auditHead(tb.b);
    const tokensBefore = await countTokens(tb.b);
    const again = await redeem(t.token);
    assert.equal(again.status, 400);
    assert.equal(again.body.error, 'invalid_grant');
    assert.match(again.body.error_description, /replay/);
    assert.equal(await countTokens(tb.b), tokensBefore);
    const denies = await denialsSince(tb.b, seq);
    assert.equal(denies.length, 1);
    assert.equal(denies[0].event, 'deny');
    assert.match(denies[0].reason!, /replay/);
    assert.deepEqual(denies[0].chain, [reader.id]);
    assert.equal(denies[0].sid, c.sid, 'the replay is tied to the session the token opened');
    assert.equal(denies[0].params.bootstrap_id, t.id);
    assert.equal(denies[0].params.replay, true);
  });

  it('lets exactly one of many concurrent redemptions through', async () => {
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300 });
    const seq = await auditHead(tb.b);
    const sessionsBefore = await countSessions(tb.b);
    const rs = await Promise.all(Array.from({ length: 12 }, () => redeem(t.token)));
    assert.equal(rs.filter((r) => r.status === 200).length, 1, JSON.stringify(rs.map((r) => r.body)));
    for (const r of rs.filter((x) => x.status !== 200)) {
      assert.equal(r.body.error, 'invalid_grant');
      assert.match(r.body.error_description, /replay/);
    }
    assert.equal(await countSessions(tb.b), sessionsBefore + 1);
    const replays = (await denialsSince(tb.b, seq)).filter((d) => /replay/.test(d.reason ?? ''));
    assert.equal(replays.length, 11);
    for (const d of replays) assert.equal(d.params.replay, true, 'a racing replay is audited as one too');
  });

  it('dies in the same commit as the session it opens: a failed commit leaves the token unused and no session', async () => {
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300 });
    const sessionsBefore = await countSessions(tb.b);
    // A database failure inside the issuing transaction, after the claim's UPDATE has run in it.
    await tb.b.db.raw("CREATE TRIGGER boom BEFORE INSERT ON sessions WHEN NEW.task = 'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    try {
      const failed = await redeem(t.token, { task: 'boom' });
      assert.equal(failed.status, 500, JSON.stringify(failed.body));
      assert.equal(failed.body.error, 'server_error');
      assert.doesNotMatch(JSON.stringify(failed.body), /injected|TRIGGER|sqlite/i, 'no database detail reaches the client');
    } finally {
      await tb.b.db.raw('DROP TRIGGER boom');
    }
    assert.equal(await countSessions(tb.b), sessionsBefore);
    const row = await tb.b.db('bootstrap_tokens').where({ id: t.id }).first();
    assert.equal(row.used_at, null, 'the claim rolled back with the session');
    assert.equal(row.used_sid, null);

    const seq = await auditHead(tb.b);
    const ok = await redeem(t.token, { task: 'fine' });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const sid = claimsOf(ok.body.access_token).sid;
    const after = await tb.b.db('bootstrap_tokens').where({ id: t.id }).first();
    assert.equal(after.used_sid, sid);
    const rows = await auditSince(tb.b, seq);
    assert.deepEqual(
      rows.map((r) => r.event),
      ['session.open'],
      'one change, one audit row',
    );
    assert.equal(rows[0].params.bootstrap_id, t.id);
    assert.equal(rows[0].sid, sid);
  });

  it('and at the function level too, where the UPDATE … WHERE used_at IS NULL is the only gate', async () => {
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300 });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () => redeemBootstrapToken(tb.b, t.token, { callerClientId: null, scope: 'docs:read', audience: [] }, new Attempt('cli.test'))),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as CordonError).reason, 'bootstrap_replay');
  });

  it('refuses an expired token with invalid_grant and leaves it unused', async () => {
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 5 });
    tb.clock.advance(5000);
    const seq = await auditHead(tb.b);
    const r = await redeem(t.token);
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_grant');
    assert.match(r.body.error_description, /expired/);
    const d = await denialsSince(tb.b, seq);
    assert.equal(d.length, 1);
    assert.match(d[0].reason!, /expired/);
    assert.equal((await tb.b.db('bootstrap_tokens').where({ id: t.id }).first()).used_at, null);
  });

  it('refuses unknown and malformed bootstrap tokens, and access tokens sent as bootstrap tokens', async () => {
    for (const bad of ['cbt_' + 'A'.repeat(43), 'cbt_short', 'x'.repeat(5000)]) {
      const r = await redeem(bad);
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_grant');
    }
    const at = await mustSession(tb, planner, 'docs:read');
    const r = await redeem(at);
    assert.equal(r.body.error, 'invalid_grant');
    assert.match(r.body.error_description, /not a bootstrap token/);
  });

  it('does not burn the token when the session it asks for is refused (scope outside the policy)', async () => {
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300 });
    const bad = await redeem(t.token, { scope: 'docs:write' });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, 'invalid_scope');
    const row = await tb.b.db('bootstrap_tokens').where({ id: t.id }).first();
    assert.equal(row.used_at, null);
    const good = await redeem(t.token, { scope: 'docs:read web:search' });
    assert.equal(good.status, 200, JSON.stringify(good.body));
    assert.equal((await redeem(t.token)).body.error, 'invalid_grant');
  });

  it('honours a scope restriction recorded on the token', async () => {
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300, scope: 'docs:read' });
    const wide = await redeem(t.token, { scope: 'docs:read web:search' });
    assert.equal(wide.body.error, 'invalid_scope');
    assert.equal((await redeem(t.token, { scope: 'docs:read' })).status, 200);
    await assert.rejects(issueBootstrapToken(tb.b, reader.id, { ttlSec: 60, scope: 'docs:write' }), (e: CordonError) => e.code === 'invalid_scope');
  });

  it("lets an authenticated agent redeem its own token, never another agent's", async () => {
    const mine = await issueBootstrapToken(tb.b, planner.id, { ttlSec: 300 });
    const theirs = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300 });
    const seq = await auditHead(tb.b);
    const foreign = await redeem(theirs.token, {}, planner);
    assert.equal(foreign.status, 400);
    assert.equal(foreign.body.error, 'invalid_grant');
    assert.match(foreign.body.error_description, /another agent/);
    const d = await denialsSince(tb.b, seq);
    assert.deepEqual(d[0].chain, [reader.id]);
    assert.equal((await redeem(mine.token, { scope: 'docs:write' }, planner)).status, 200);
    assert.equal((await redeem(theirs.token)).status, 200, 'the refused foreign attempt did not burn it');
  });

  it('refuses a token whose agent was disabled after issue', async () => {
    const a = await register(tb, 'boot-later-off', 'doc-reader');
    const t = await issueBootstrapToken(tb.b, a.id, { ttlSec: 300 });
    await setAgentEnabled(tb.b, a.id, false);
    const r = await redeem(t.token);
    assert.equal(r.body.error, 'invalid_grant');
    assert.match(r.body.error_description, /disabled/);
    await setAgentEnabled(tb.b, a.id, true);
    assert.equal((await redeem(t.token)).status, 200);
  });

  it('the workload client can do nothing but redeem: no delegation, no client_credentials, no delegation-only parameters', async () => {
    const at = await mustSession(tb, planner, 'docs:read');
    const seq = await auditHead(tb.b);
    const del = await token(tb, null, {
      grant_type: GRANT_TE,
      subject_token: at,
      subject_token_type: TT_ACCESS,
      requested_actor: reader.id,
      scope: 'docs:read',
    });
    assert.equal(del.status, 400);
    assert.equal(del.body.error, 'unauthorized_client');
    assert.match(del.body.error_description, /authenticated agent/);
    assert.equal((await denialsSince(tb.b, seq)).length, 1);
    const cc = await token(tb, null, { grant_type: 'client_credentials', scope: 'docs:read' });
    assert.equal(cc.status, 400);
    assert.equal(cc.body.error, 'invalid_request');
    assert.match(cc.body.error_description, /grant type is not allowed for this client/);
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300 });
    const notApplicable: Array<Record<string, string>> = [{ scope_policy: 'intersect' }, { dpop_jkt: 'A'.repeat(43) }, { requested_actor: planner.id }];
    for (const extra of notApplicable) {
      const r = await redeem(t.token, extra);
      assert.equal(r.body.error, 'invalid_request', JSON.stringify(extra));
    }
    // A secret presented for the workload client is refused: it has none.
    const withSecret = await token(
      tb,
      { id: 'cordon-workload', secret: 'x', name: 'w' },
      { grant_type: GRANT_TE, subject_token: t.token, subject_token_type: TT_BOOTSTRAP, scope: 'docs:read' },
    );
    assert.equal(withSecret.status, 401);
    assert.equal((await redeem(t.token)).status, 200, 'still unused after the refusals');
  });

  it('a bootstrapped session is a normal session: it can delegate within its policy', async () => {
    const t = await issueBootstrapToken(tb.b, planner.id, { ttlSec: 300 });
    const r = await redeem(t.token, { scope: 'docs:read web:search' });
    assert.equal(r.status, 200);
    // The workload client cannot use it to delegate, the planner can.
    const d = await delegateReq(tb, planner, r.body.access_token, reader.id, 'docs:read');
    assert.equal(d.status, 200, JSON.stringify(d.body));
    const c = claimsOf(d.body.access_token);
    assert.equal(c.sub, planner.id);
    assert.deepEqual(c.act, { sub: reader.id, act: { sub: planner.id } });
  });

  it('DPoP-binds the bootstrapped session token when a proof is sent', async () => {
    const k = await dpopKey();
    const t = await issueBootstrapToken(tb.b, reader.id, { ttlSec: 300 });
    const proof = await dpopProof(k, 'POST', `${tb.url}/token`, { iat: Math.floor(tb.clock.now() / 1000) });
    const r = await token(tb, null, { grant_type: GRANT_TE, subject_token: t.token, subject_token_type: TT_BOOTSTRAP, scope: 'docs:read' }, { dpop: proof });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.token_type, 'DPoP');
    assert.equal(claimsOf(r.body.access_token).cnf.jkt, k.jkt);
  });
});
