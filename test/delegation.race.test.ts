import { Attempt } from '../src/audit/attempt.ts';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { registerAgent } from '../src/agents/registry.ts';
import { startSession } from '../src/sessions/start.ts';
import { delegate } from '../src/delegation/delegate.ts';
import { revokeSession, revokeTokenChain } from '../src/revocation/revoke.ts';
import { introspect } from '../src/tokens/introspect.ts';

/**
 * A delegation racing a revocation of its parent (or of the session) must never leave a live
 * child under a dead link: the checks made before the issuing transaction are repeated inside it.
 * The revocation is started from knex's query event at each point of the delegation in turn, so
 * every gap between its reads is hit deterministically.
 */
describe('delegation racing revocation', function () {
  this.timeout(60_000);
  let tb: TestBroker;
  let planner: string;
  let reader: string;

  before(async () => {
    tb = await startTestBroker({ http: false, policyDir: resolve('policies') });
    planner = (await registerAgent(tb.b, { name: 'race-planner', policy: 'research-planner', auth: 'secret' })).agent.id;
    reader = (await registerAgent(tb.b, { name: 'race-reader', policy: 'doc-reader', auth: 'secret' })).agent.id;
  });
  after(() => tb.close());

  for (const target of ['token', 'session'] as const) {
    it(`no live child survives a revocation of the parent ${target} that lands mid-delegation`, async () => {
      const b = tb.b;
      let issued = 0;
      let refusedInside = 0;
      for (let round = 0; round < 24; round++) {
        const root = await startSession(b, { clientId: planner, scope: 'docs:read', audience: [] }, new Attempt('cli.test'));
        const revoke = () =>
          target === 'token'
            ? revokeTokenChain(b, root.claims.jti, { actor: 'test', via: 'test' })
            : revokeSession(b, root.sid, { actor: 'test', via: 'test' });
        const fireAt = round % 12;
        let seen = 0;
        let revoking: Promise<unknown> | undefined;
        const onQuery = () => {
          if (seen++ === fireAt && !revoking) revoking = revoke();
        };
        b.db.on('query', onQuery);
        if (b.read !== b.db) b.read.on('query', onQuery);
        let child: string | null = null;
        let reason: string | undefined;
        try {
          child = (
            await delegate(
              b,
              { callerClientId: planner, subjectToken: root.jwt, requestedActor: reader, scope: 'docs:read', audience: [] },
              new Attempt('cli.test'),
            )
          ).jwt;
        } catch (e) {
          reason = (e as { reason?: string }).reason;
        } finally {
          b.db.off('query', onQuery);
          if (b.read !== b.db) b.read.off('query', onQuery);
        }
        await (revoking ?? revoke());
        if (child) {
          issued++;
          assert.deepEqual(await introspect(b, child), { active: false }, `round ${round}: a child issued around the revocation is still active`);
        } else if (reason === 'token_revoked' || reason === 'token_session_revoked') {
          refusedInside++;
        }
        const live = await b.db('tokens').where({ sid: root.sid }).whereNull('revoked_at');
        assert.equal(live.length, 0, `round ${round} (revocation at query ${fireAt}): live tokens under a revoked ${target}`);
      }
      assert.ok(issued + refusedInside > 0, 'the race window was reached');
    });
  }
});
