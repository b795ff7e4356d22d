import { Attempt } from '../src/audit/attempt.ts';
import assert from 'node:assert/strict';
import { rotateAgentCredential, setAgentEnabled } from '../src/agents/registry.ts';
import { revokeAgent } from '../src/revocation/revoke.ts';
import { agents } from '../src/store/agents.ts';
import type { CordonError } from '../src/errors.ts';
import { startSession } from '../src/sessions/start.ts';
import { delegate } from '../src/delegation/delegate.ts';
import { introspect } from '../src/tokens/introspect.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';

/** What the session's opener is and was carries down the chain. */
describe('core: the root of a session', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker({ http: false });
  });
  after(async () => t?.close());

  it('disabling the agent that opened a session turns tokens delegated from it inactive too; enabling restores them', async () => {
    const p = await t.register('root-planner', 'research-planner');
    const r = await t.register('root-reader', 'doc-reader');
    const root = await startSession(t.b, { clientId: p.id, scope: 'docs:read', audience: [] }, new Attempt('cli.test'));
    const child = await delegate(
      t.b,
      { callerClientId: p.id, subjectToken: root.jwt, requestedActor: r.id, scope: 'docs:read', audience: [] },
      new Attempt('cli.test'),
    );
    assert.equal((await introspect(t.b, child.jwt)).active, true);
    await setAgentEnabled(t.b, p.id, false);
    assert.equal((await introspect(t.b, root.jwt)).active, false);
    assert.equal((await introspect(t.b, child.jwt)).active, false, 'the delegated token goes with its root');
    await setAgentEnabled(t.b, p.id, true);
    assert.equal((await introspect(t.b, child.jwt)).active, true);
  });

  it('disabling a link in the middle of a chain turns everything delegated through it inactive, and only that', async () => {
    const p = await t.register('mid-planner', 'research-planner');
    const h = await t.register('mid-helper', 'research-planner');
    const r = await t.register('mid-reader', 'doc-reader');
    const root = await startSession(t.b, { clientId: p.id, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test'));
    const mid = await delegate(
      t.b,
      { callerClientId: p.id, subjectToken: root.jwt, requestedActor: h.id, scope: 'docs:read', audience: [] },
      new Attempt('cli.test'),
    );
    const leaf = await delegate(
      t.b,
      { callerClientId: h.id, subjectToken: mid.jwt, requestedActor: r.id, scope: 'docs:read', audience: [] },
      new Attempt('cli.test'),
    );
    const side = await delegate(
      t.b,
      { callerClientId: p.id, subjectToken: root.jwt, requestedActor: r.id, scope: 'docs:read', audience: [] },
      new Attempt('cli.test'),
    );
    assert.equal(leaf.claims.cordon_depth, 2);
    await setAgentEnabled(t.b, h.id, false);
    assert.equal((await introspect(t.b, leaf.jwt)).active, false, 'delegated through the disabled helper');
    assert.equal((await introspect(t.b, side.jwt)).active, true, 'a sibling branch without the helper is untouched');
    assert.equal((await introspect(t.b, root.jwt)).active, true);
    await setAgentEnabled(t.b, h.id, true);
    assert.equal((await introspect(t.b, leaf.jwt)).active, true);
  });

  it('revocation is final: an enable, disable or rotate that read the agent before a revocation committed cannot undo it', async () => {
    const a = await t.register('race-revoked', 'research-planner');
    await setAgentEnabled(t.b, a.id, false);
    // The revocation commits between the operation's read of the agent and its own write:
    // started on the read's query event, it is queued on the single writer connection ahead of the write.
    for (const op of [() => setAgentEnabled(t.b, a.id, true), () => setAgentEnabled(t.b, a.id, false), () => rotateAgentCredential(t.b, a.id)]) {
      let revoking: Promise<unknown> | undefined;
      const onQuery = () => {
        revoking ??= revokeAgent(t.b, a.id, { actor: 'test', via: 'test' });
      };
      t.b.db.once('query', onQuery);
      await assert.rejects(op(), (e: CordonError) => e.reason === 'agent_revoked');
      await revoking;
      assert.equal((await agents.get(t.b.db, a.id))!.status, 'revoked');
    }
    await assert.rejects(
      startSession(t.b, { clientId: a.id, scope: 'docs:read', audience: [] }, new Attempt('cli.test')),
      (e: CordonError) => e.code === 'invalid_client',
    );
  });

  it('a renewal keeps the subject the session was opened for (on-behalf-of survives renewal)', async () => {
    const a = await t.register('fed-agent', 'research-planner');
    const first = await startSession(
      t.b,
      { clientId: a.id, scope: 'docs:read', audience: [], origin: 'federation', subject: 'https://idp.example#alice' },
      new Attempt('cli.test'),
    );
    const again = await startSession(t.b, { clientId: a.id, scope: 'docs:read', audience: [], session: first.sid }, new Attempt('cli.test'));
    assert.equal(first.claims.sub, 'https://idp.example#alice');
    assert.equal(again.claims.sub, 'https://idp.example#alice');
  });
});

describe('core: client authentication at /introspect and /revoke', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker();
  });
  after(async () => t?.close());

  it('a disabled agent may revoke what it holds but not introspect', async () => {
    const { postForm, basic } = await import('./helpers/broker.ts');
    const a = await t.register('dis-agent', 'doc-reader');
    const tok = await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:read' }, { authorization: basic(a.id, a.secret) });
    await setAgentEnabled(t.b, a.id, false);
    const i = await postForm(`${t.url}/introspect`, { token: tok.body.access_token }, { authorization: basic(a.id, a.secret) });
    assert.equal(i.status, 401);
    assert.equal(i.body.error, 'invalid_client');
    const r = await postForm(`${t.url}/revoke`, { token: tok.body.access_token }, { authorization: basic(a.id, a.secret) });
    assert.equal(r.status, 200);
    assert.notEqual(
      (
        await t.b
          .db('tokens')
          .where({ jti: (await import('jose')).decodeJwt(tok.body.access_token).jti })
          .first()
      ).revoked_at,
      null,
    );
  });

  it('a form client_id that differs from the Basic header is refused', async () => {
    const { postForm, basic } = await import('./helpers/broker.ts');
    const a = await t.register('mismatch-a', 'doc-reader');
    const other = await t.register('mismatch-b', 'doc-reader');
    const r = await postForm(`${t.url}/introspect`, { token: 'x.y.z', client_id: other.id }, { authorization: basic(a.id, a.secret) });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_request');
  });
});
