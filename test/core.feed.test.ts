import assert from 'node:assert/strict';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { startPgTestBroker } from './helpers/pg.ts';
import { revocations } from '../src/store/revocations.ts';
import { revocationFeed, FEED_GRACE_MS } from '../src/revocation/feed.ts';

/** The revocation feed: nothing a verifier could still accept is dropped, and no entry is skipped by the cursor. */
describe('core: the revocation feed', function () {
  this.timeout(60_000);

  it('keeps an entry a grace period past its exp (verifiers tolerate some clock skew), then drops it', async () => {
    const tb = await startTestBroker({ http: false });
    try {
      const b = tb.b;
      const now = b.clock.now();
      await b.db.transaction((tx) => revocations.add(tx, [{ kind: 'jti', value: 'short-lived', expiresAt: now + 1000, revokedAt: now }]));
      tb.clock.advance(1000 + 3000); // 3 s past exp: a verifier with 10 s tolerance would still accept it
      assert.deepEqual(
        (await revocationFeed(b, 0, 100)).revoked.map((r) => r.value),
        ['short-lived'],
      );
      tb.clock.advance(FEED_GRACE_MS);
      const page = await revocationFeed(b, 0, 100);
      assert.deepEqual(page.revoked, []);
      assert.equal(page.cursor, 1, 'the cursor still moves past it');
    } finally {
      await tb.close();
    }
  });

  describe('on PostgreSQL', () => {
    let tb: TestBroker;
    let pg: Awaited<ReturnType<typeof startPgTestBroker>>;
    before(async () => {
      pg = await startPgTestBroker();
      tb = pg.tb;
    });
    after(async () => pg?.close());

    it('a revocation that commits after a later one is still delivered (seq order is commit order)', async () => {
      const b = tb.b;
      const now = b.clock.now();
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const slow = b.db.transaction(async (tx) => {
        await revocations.add(tx, [{ kind: 'jti', value: 'slow-jti', expiresAt: now + 600_000, revokedAt: now }]);
        await gate; // still open while another revocation tries to commit
      });
      await new Promise((r) => setTimeout(r, 150));
      const fast = b.db.transaction((tx) => revocations.add(tx, [{ kind: 'jti', value: 'fast-jti', expiresAt: now + 600_000, revokedAt: now }]));
      await new Promise((r) => setTimeout(r, 150));
      const first = await revocationFeed(b, 0, 100); // a verifier polls while the first is still open
      release();
      await slow;
      await fast;
      const second = await revocationFeed(b, first.cursor, 100);
      const seen = [...first.revoked, ...second.revoked].map((r) => r.value);
      assert.deepEqual(seen.sort(), ['fast-jti', 'slow-jti'], `delivered ${JSON.stringify(seen)} (cursor ${first.cursor})`);
    });
  });
});
