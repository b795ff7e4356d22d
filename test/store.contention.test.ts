import { Attempt } from '../src/audit/attempt.ts';
import assert from 'node:assert/strict';
import pino from 'pino';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { startPgTestBroker } from './helpers/pg.ts';
import { openBroker, closeBroker } from '../src/broker.ts';
import { startSession } from '../src/sessions/start.ts';
import { delegate } from '../src/delegation/delegate.ts';
import { revokeSession, revokeTokenChain } from '../src/revocation/revoke.ts';
import { registerAgent } from '../src/agents/registry.ts';
import { verifyAudit } from '../src/audit/verify.ts';

/** Two writers on one database: nothing fails for contention that a retry would have got through. */
describe('store: writers in contention', function () {
  this.timeout(120_000);

  it('SQLite: an admin process revokes while the broker issues (no SQLITE_BUSY reaches the admin)', async () => {
    const tb = await startTestBroker({ http: false });
    try {
      const a = await tb.register('loadp', 'research-planner');
      const sids: string[] = [];
      for (let i = 0; i < 20; i++) sids.push((await startSession(tb.b, { clientId: a.id, scope: 'docs:read', audience: [] }, new Attempt('cli.test'))).sid);
      const cli = await openBroker(tb.b.config, { clock: tb.clock, log: pino({ level: 'silent' }) });
      let stop = false;
      let issued = 0;
      const load = (async () => {
        while (!stop)
          issued += (
            await Promise.all(
              Array.from({ length: 16 }, () => startSession(tb.b, { clientId: a.id, scope: 'docs:read', audience: [] }, new Attempt('cli.test'))),
            )
          ).length;
      })();
      const errors: string[] = [];
      for (const sid of sids) await revokeSession(cli, sid, { actor: 'cli', via: 'cli' }).catch((e: Error) => errors.push(e.message));
      stop = true;
      await load;
      await closeBroker(cli);
      assert.deepEqual(errors, []);
      assert.ok(issued > 0, 'the broker was issuing meanwhile');
      assert.equal((await verifyAudit(tb.b.db)).ok, true);
    } finally {
      await tb.close();
    }
  });

  describe('PostgreSQL', () => {
    let tb: TestBroker;
    let pg: Awaited<ReturnType<typeof startPgTestBroker>>;
    before(async () => {
      pg = await startPgTestBroker();
      tb = pg.tb;
    });
    after(async () => pg?.close());

    it('batched delegations and cascades that deadlock are retried: every revocation succeeds, every delegation is settled, the chain verifies', async () => {
      const b = tb.b;
      const planner = (await registerAgent(b, { name: 'dl-planner', policy: 'research-planner', auth: 'secret' })).agent.id;
      const helper = (await registerAgent(b, { name: 'dl-helper', policy: 'research-planner', auth: 'secret' })).agent.id;
      const reader = (await registerAgent(b, { name: 'dl-reader', policy: 'doc-reader', auth: 'secret' })).agent.id;
      const failures: string[] = [];
      for (let round = 0; round < 30; round++) {
        const roots = await Promise.all(
          [0, 1].map(() => startSession(b, { clientId: planner, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test'))),
        );
        const mids = await Promise.all(
          roots.map((r) =>
            delegate(b, { callerClientId: planner, subjectToken: r.jwt, requestedActor: helper, scope: 'docs:read', audience: [] }, new Attempt('cli.test')),
          ),
        );
        const out = await Promise.allSettled([
          ...mids.map((m) =>
            delegate(b, { callerClientId: helper, subjectToken: m.jwt, requestedActor: reader, scope: 'docs:read', audience: [] }, new Attempt('cli.test')),
          ),
          ...roots.map((r) =>
            delegate(b, { callerClientId: planner, subjectToken: r.jwt, requestedActor: reader, scope: 'docs:read', audience: [] }, new Attempt('cli.test')),
          ),
          ...roots.map((r) => revokeTokenChain(b, r.claims.jti, { actor: 'test', via: 'test' })),
        ]);
        // Delegations may lose to the revocation (refused with invalid_grant); nothing may fail with a database error.
        for (const r of out)
          if (r.status === 'rejected' && (r.reason as { code?: string }).code !== 'invalid_grant') failures.push(String((r.reason as Error).message));
        for (const r of roots) assert.deepEqual(await b.db('tokens').where({ sid: r.sid }).whereNull('revoked_at').select('jti'), [], `round ${round}`);
      }
      assert.deepEqual(failures, []);
      assert.equal((await verifyAudit(b.db)).ok, true);
      await revokeSession(b, (await startSession(b, { clientId: planner, scope: 'docs:read', audience: [] }, new Attempt('cli.test'))).sid, {
        actor: 'test',
        via: 'test',
      });
    });
  });
});
