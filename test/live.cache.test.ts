/**
 * The broker's live-token cache on its own: what it keeps, and what it must not keep.
 */
import assert from 'node:assert/strict';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { startSession } from '../src/sessions/start.ts';
import { Attempt } from '../src/audit/attempt.ts';
import { introspect } from '../src/tokens/introspect.ts';
import { verifySignature } from '../src/tokens/verify.ts';
import { revokeSession } from '../src/revocation/revoke.ts';

describe('live-token cache', () => {
  let tb: TestBroker;
  let agentId: string;
  const open = () => startSession(tb.b, { clientId: agentId, scope: 'docs:read', audience: [] }, new Attempt('cli.test'));

  beforeEach(async () => {
    tb = await startTestBroker(); // its HTTP front door starts b.live
    agentId = (await tb.register('planner', 'research-planner')).id;
  });
  afterEach(() => tb.close());

  it('keeps a live token after its first check and answers the same string from memory', async () => {
    const s = await open();
    assert.equal(tb.b.live.current, true);
    assert.equal(tb.b.live.size, 0);
    assert.equal((await introspect(tb.b, s.jwt)).active, true);
    assert.equal(tb.b.live.size, 1);
    assert.equal(tb.b.live.known(s.jwt)?.claims.jti, s.claims.jti);
    await revokeSession(tb.b, s.sid, { actor: 'test', via: 'test' });
    assert.equal(tb.b.live.size, 0, "this process's own revocation is dropped at once");
    assert.equal((await introspect(tb.b, s.jwt)).active, false);
    assert.equal(tb.b.live.size, 0, 'nothing negative is kept');
  });

  it('does not keep a record read while a revocation was being learned (it may predate the commit)', async () => {
    const s = await open();
    const presented = await verifySignature(tb.b, s.jwt, 'invalid_token');
    // The token's record is read; before its answer arrives, the cache learns of a change.
    const interfere = (q: { sql: string }) => {
      if (/from [`"]tokens[`"] as [`"]t[`"]/.test(q.sql)) tb.b.live.agentsChanged(['agt_unrelated']);
    };
    tb.b.read.on('query', interfere);
    try {
      await tb.b.live.check(presented.jti, presented, s.jwt);
    } finally {
      tb.b.read.off('query', interfere);
    }
    assert.equal(tb.b.live.size, 0);
    await tb.b.live.check(presented.jti, presented, s.jwt);
    assert.equal(tb.b.live.size, 1, 'read again undisturbed, it is kept');
  });

  it('answers nothing from memory once stopped: every check reads the database', async () => {
    const s = await open();
    assert.equal((await introspect(tb.b, s.jwt)).active, true);
    await tb.b.live.close();
    assert.equal(tb.b.live.current, false);
    assert.equal(tb.b.live.known(s.jwt), undefined);
    assert.equal((await introspect(tb.b, s.jwt)).active, true);
    assert.equal(tb.b.live.size, 0);
  });
});
