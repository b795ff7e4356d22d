import assert from 'node:assert/strict';
import { ManualClock } from '../src/clock.ts';
import { CordonSdkError } from '../src/sdk/errors.ts';
import type { Session } from '../src/sdk/session.ts';
import type { TokenSource } from '../src/sdk/sources/index.ts';
import type { TokenAnswer } from '../src/sdk/token-answer.ts';
import { TokenKeeper } from '../src/sdk/token-keeper.ts';

const MIN = 60_000;

/** A token source that answers from a script, counting what it was asked: the keeper without a broker. */
function scripted(answer: (n: number, s: Session | null) => Promise<TokenAnswer>, extra: Partial<TokenSource> = {}) {
  let calls = 0;
  const source: TokenSource = {
    mode: 'secret',
    endsSessions: true,
    renew: (s) => answer(++calls, s),
    ...extra,
  };
  return { source, calls: () => calls };
}
const tokenFor = (n: number, expiresIn: number, more: Partial<TokenAnswer> = {}): TokenAnswer => ({
  accessToken: `tok-${n}`,
  tokenType: 'Bearer',
  expiresIn,
  sid: 'ses_1',
  ...more,
});
const req = { scope: ['a'], audience: [] };

describe('sdk: the token keeper on its own (a scripted token source, a manual clock)', () => {
  it('renews a fifth of the life before expiry plus jitter, and serves the same token until then', async () => {
    for (const [random, marginMs] of [
      [0, 2 * MIN],
      [0.8, 2.4 * MIN],
    ] as const) {
      const clock = new ManualClock();
      const src = scripted(async (n) => tokenFor(n + 1, 600));
      const k = new TokenKeeper(src.source, clock, () => random);
      k.begin(tokenFor(1, 600), req);
      clock.advance(10 * MIN - marginMs - 1);
      assert.equal((await k.fresh()).accessToken, 'tok-1', 'just before the renewal time');
      assert.equal(src.calls(), 0);
      clock.advance(1);
      assert.equal((await k.fresh()).accessToken, 'tok-2', 'renewed at the renewal time');
      assert.equal(src.calls(), 1);
    }
  });

  it('never renews past the session end: a token reaching it is used to the end, then session_ended without asking', async () => {
    const clock = new ManualClock();
    const end = clock.now() + 5 * MIN;
    const src = scripted(async (n) => tokenFor(n + 1, 600));
    const k = new TokenKeeper(src.source, clock, () => 0);
    const s = k.begin(tokenFor(1, 600, { sessionExpiresAt: end }), req);
    assert.equal(s.current.expiresAt, end, 'the token is cut at the session end');
    clock.set(end - 1001);
    assert.equal((await k.fresh()).accessToken, 'tok-1');
    clock.set(end);
    await assert.rejects(k.fresh(), (e: CordonSdkError) => e.code === 'session_ended' && /reached its end/.test(e.message));
    assert.equal(src.calls(), 0);
  });

  it('a refused renewal ends the session for good; concurrent callers share one renewal', async () => {
    const clock = new ManualClock();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const src = scripted(async () => {
      await gate;
      throw new CordonSdkError('session_ended', 'session ses_1 cannot be renewed: revoked', { error: 'invalid_grant' });
    });
    const k = new TokenKeeper(src.source, clock, () => 0);
    k.begin(tokenFor(1, 600), req);
    clock.advance(9 * MIN);
    const all = Promise.allSettled(Array.from({ length: 5 }, () => k.fresh()));
    release();
    for (const r of await all) assert.equal(r.status === 'rejected' && (r.reason as CordonSdkError).code, 'session_ended');
    assert.equal(src.calls(), 1);
    await assert.rejects(k.fresh(), /revoked/);
    assert.equal(src.calls(), 1, 'not asked again once ended');
    assert.equal(k.session!.ended?.error, 'invalid_grant');
  });

  it('a broker hiccup keeps the still-valid token; a source that cannot renew uses its token to expiry and says why', async () => {
    const clock = new ManualClock();
    const down = scripted(async () => {
      throw new CordonSdkError('network', 'could not reach the broker');
    });
    const k = new TokenKeeper(down.source, clock, () => 0);
    k.begin(tokenFor(1, 600), req);
    clock.advance(9 * MIN);
    assert.equal((await k.fresh()).accessToken, 'tok-1');
    clock.advance(MIN);
    await assert.rejects(k.fresh(), (e: CordonSdkError) => e.code === 'network');

    const once: TokenSource = { mode: 'bootstrap', endsSessions: true, cannotRenew: 'this bootstrap session cannot be renewed' };
    const k2 = new TokenKeeper(once, clock, () => 0);
    k2.begin(tokenFor(1, 600), req);
    clock.advance(10 * MIN - 1001);
    assert.equal((await k2.fresh()).accessToken, 'tok-1', 'no renewal time for a token that cannot be renewed: used to the end');
    clock.advance(1);
    await assert.rejects(k2.fresh(), (e: CordonSdkError) => e.code === 'session_ended' && e.message === 'this bootstrap session cannot be renewed');
  });

  it("a source whose session starts on first use (cordon exec's endpoint) is asked with no session, then renews it", async () => {
    const clock = new ManualClock();
    const seen: Array<Session | null> = [];
    const src = scripted(
      async (n, s) => {
        seen.push(s);
        return tokenFor(n, 300, { scope: ['a', 'b'], sessionExpiresAt: clock.now() + 60 * MIN });
      },
      { mode: 'local', endsSessions: false, startsOnFirstUse: true },
    );
    const k = new TokenKeeper(src.source, clock, () => 0);
    assert.equal((await k.fresh()).accessToken, 'tok-1');
    assert.deepEqual(k.session!.scope, ['a', 'b']);
    clock.advance(5 * MIN);
    assert.equal((await k.fresh()).accessToken, 'tok-2');
    assert.equal(seen[0], null);
    assert.equal(seen[1]?.sid, 'ses_1');
  });
});
