import assert from 'node:assert/strict';
import { ManualClock } from '../src/clock.ts';
import { RefusalLimiter, SHARED_BUCKET, clientAddressOf, type RefusalSummary } from '../src/audit/refusal-limiter.ts';

/** The limiter alone, on a manual clock and a manual timer: windows, summaries, bounds. */
describe('refusal limiter', () => {
  let clock: ManualClock;
  let written: RefusalSummary[];
  let timers: Array<{ fn: () => void; ms: number; cancelled: boolean }>;
  const limiter = (limits: ConstructorParameters<typeof RefusalLimiter>[0]['limits'] = {}) =>
    new RefusalLimiter({
      clock,
      limits: { perWindow: 3, windowMs: 60_000, ...limits },
      write: async (s) => {
        written.push(s);
      },
      schedule: (fn, ms) => {
        const t = { fn, ms, cancelled: false };
        timers.push(t);
        return () => (t.cancelled = true);
      },
    });
  const settle = () => new Promise((r) => setImmediate(r));

  beforeEach(() => {
    clock = new ManualClock(Date.UTC(2026, 0, 1));
    written = [];
    timers = [];
  });

  it('writes the first N per address and window, counts the rest, and summarises them when the window ends (timer)', async () => {
    const l = limiter();
    const admitted = Array.from({ length: 8 }, (_, i) => l.admit('10.0.0.1', i % 2 ? 'invalid_client' : 'not_found'));
    assert.deepEqual(admitted, [true, true, true, false, false, false, false, false]);
    assert.equal(l.admit('10.0.0.2', 'not_found'), true, 'another address has its own budget');
    assert.equal(timers.length, 1, 'one timer armed for the window');
    timers[0].fn(); // fires early (real time is not the broker clock): nothing has ended yet
    await settle();
    assert.equal(written.length, 0);
    clock.advance(60_000);
    timers.at(-1)!.fn();
    await settle();
    assert.equal(written.length, 1);
    assert.deepEqual(written[0], {
      address: '10.0.0.1',
      count: 5,
      windowStart: Date.UTC(2026, 0, 1),
      windowEnd: Date.UTC(2026, 0, 1) + 60_000,
      topReasons: [
        { reason: 'invalid_client', count: 3 },
        { reason: 'not_found', count: 2 },
      ],
    });
    assert.equal(l.tracked, 0, 'ended windows are forgotten');
    assert.equal(l.admit('10.0.0.1', 'not_found'), true, 'a new window, a new budget');
    await l.close();
  });

  it('the next refusal from anywhere after the window flushes it', async () => {
    const l = limiter();
    for (let i = 0; i < 5; i++) l.admit('10.0.0.1', 'x');
    clock.advance(61_000);
    l.admit('192.0.2.9', 'x');
    await settle();
    assert.equal(written.length, 1);
    assert.equal(written[0].count, 2);
    assert.equal(written[0].windowEnd, written[0].windowStart + 60_000, 'the window end, not the flush time');
    await l.close();
  });

  it('close() writes what is counted so far, and afterwards nothing is held back', async () => {
    const l = limiter();
    for (let i = 0; i < 4; i++) l.admit('10.0.0.1', 'x');
    clock.advance(5_000);
    await l.close();
    assert.equal(written.length, 1);
    assert.equal(written[0].windowEnd - written[0].windowStart, 5_000, 'cut short at stop');
    assert.ok(timers.every((t) => t.cancelled));
    assert.equal(l.admit('10.0.0.1', 'x'), true);
  });

  it('tracks at most maxAddresses; beyond, one shared bucket', async () => {
    const l = limiter({ maxAddresses: 3, perWindow: 1 });
    for (let i = 0; i < 100; i++) l.admit(`10.0.${i}.1`, 'x');
    assert.ok(l.tracked <= 4, `tracked ${l.tracked}`);
    await l.close();
    assert.deepEqual(
      written.map((s) => [s.address, s.count]),
      [[SHARED_BUCKET, 96]],
      'the first 3 addresses and the shared bucket each wrote one row',
    );
  });

  it('counts at most maxReasons distinct reasons per bucket', async () => {
    const l = limiter({ perWindow: 0, maxReasons: 2 });
    for (const r of ['a', 'b', 'c', 'd', 'a']) l.admit('10.0.0.1', r);
    await l.close();
    assert.deepEqual(written[0].topReasons, [
      { reason: 'a', count: 2 },
      { reason: 'other', count: 2 },
      { reason: 'b', count: 1 },
    ]);
  });

  it('clientAddressOf: IPv4 as is, IPv4-mapped unwrapped, IPv6 by its /64', () => {
    assert.equal(clientAddressOf('127.0.0.1'), '127.0.0.1');
    assert.equal(clientAddressOf('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(clientAddressOf('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(clientAddressOf('2001:db8:1:2::99'), '2001:db8:1:2::/64');
    assert.equal(clientAddressOf('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(clientAddressOf('::1'), '0:0:0:0::/64');
    assert.equal(clientAddressOf(undefined), 'unknown');
  });
});
