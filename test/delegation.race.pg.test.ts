import { Attempt } from '../src/audit/attempt.ts';
import assert from 'node:assert/strict';
import type { TestBroker } from './helpers/broker.ts';
import { startPgTestBroker } from './helpers/pg.ts';
import { registerAgent } from '../src/agents/registry.ts';
import { startSession } from '../src/sessions/start.ts';
import { delegate } from '../src/delegation/delegate.ts';
import { revokeTokenChain } from '../src/revocation/revoke.ts';

/**
 * On PostgreSQL a delegation and a cascade revocation really run at the same time on different
 * connections. Whatever the interleaving, no live token may remain under a revoked link: the
 * delegation share-locks its parent at commit and the cascade locks every row it walks.
 */
describe('delegation racing revocation on PostgreSQL', function () {
  this.timeout(120_000);
  let tb: TestBroker;
  let pg: Awaited<ReturnType<typeof startPgTestBroker>>;
  let planner: string;
  let reader: string;
  let helper: string;

  before(async () => {
    pg = await startPgTestBroker();
    tb = pg.tb;
    planner = (await registerAgent(tb.b, { name: 'pg-planner', policy: 'research-planner', auth: 'secret' })).agent.id;
    reader = (await registerAgent(tb.b, { name: 'pg-reader', policy: 'doc-reader', auth: 'secret' })).agent.id;
    helper = (await registerAgent(tb.b, { name: 'pg-helper', policy: 'research-planner', auth: 'secret' })).agent.id;
  });
  after(async () => pg?.close());

  it('leaves no live token under a revoked ancestor, over many concurrent rounds', async () => {
    const b = tb.b;
    let issuedAndKilled = 0;
    let refused = 0;
    for (let round = 0; round < 40; round++) {
      const root = await startSession(b, { clientId: planner, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test'));
      // A middle link, so the race also hits a node below the revoked root.
      const mid = await delegate(
        b,
        { callerClientId: planner, subjectToken: root.jwt, requestedActor: helper, scope: 'docs:read', audience: [] },
        new Attempt('cli.test'),
      );
      const results = await Promise.allSettled([
        delegate(b, { callerClientId: helper, subjectToken: mid.jwt, requestedActor: reader, scope: 'docs:read', audience: [] }, new Attempt('cli.test')),
        delegate(b, { callerClientId: planner, subjectToken: root.jwt, requestedActor: reader, scope: 'docs:read', audience: [] }, new Attempt('cli.test')),
        // Started a little later each round, so it lands before, during and after the delegations' commits.
        new Promise((r) => setTimeout(r, round % 10)).then(() => revokeTokenChain(b, root.claims.jti, { actor: 'test', via: 'test' })),
      ]);
      assert.equal(results[2].status, 'fulfilled', String((results[2] as PromiseRejectedResult).reason));
      issuedAndKilled += results.slice(0, 2).filter((r) => r.status === 'fulfilled').length;
      refused += results.slice(0, 2).filter((r) => r.status === 'rejected').length;
      const live = await b.db('tokens').where({ sid: root.sid }).whereNull('revoked_at');
      assert.deepEqual(
        live.map((t) => t.jti),
        [],
        `round ${round}: tokens survived the cascade`,
      );
    }
    // Both orders happened at least sometimes: children issued before the cascade were swept up by it.
    assert.ok(issuedAndKilled > 0, 'some delegations won the race and were then revoked');
    assert.ok(refused > 0, 'some delegations lost the race and were refused');
  });
});
