import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DurationError, formatDuration, parseDuration } from '../src/policy/duration.ts';

describe('policy/duration', () => {
  it('parses unit durations', () => {
    assert.equal(parseDuration('30s'), 30);
    assert.equal(parseDuration('10m'), 600);
    assert.equal(parseDuration('1h'), 3600);
    assert.equal(parseDuration('1h30m'), 5400);
    assert.equal(parseDuration('2d'), 172_800);
    assert.equal(parseDuration('1d2h3m4s'), 86_400 + 7200 + 180 + 4);
    assert.equal(parseDuration('90m'), 5400);
  });

  it('takes whole seconds as a number (and as a digit string, as YAML quoting may produce)', () => {
    assert.equal(parseDuration(600), 600);
    assert.equal(parseDuration('600'), 600);
  });

  for (const bad of ['', '10x', '-5m', '0s', '0', '1.5h', '1.5', ' 10m', '10m ', '1h 30m', '30m1h', '1h1h', 'h', '10M', 'm10', '1e3'])
    it(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(
        () => parseDuration(bad),
        (e: unknown) => e instanceof DurationError && e.message.includes(JSON.stringify(bad)),
      );
    });

  for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 60]) it(`rejects the number ${bad}`, () => assert.throws(() => parseDuration(bad), DurationError));

  it('rejects non-strings and non-numbers with a typed error', () => {
    assert.throws(() => parseDuration(null as unknown as string), DurationError);
    assert.throws(() => parseDuration({} as unknown as string), DurationError);
  });

  it('rejects a sum that is not a safe integer', () => {
    assert.throws(() => parseDuration('99999999999999999999d'), /too large/);
  });

  it('formatDuration round-trips through parseDuration', () => {
    assert.equal(formatDuration(5400), '1h30m');
    fc.assert(fc.property(fc.integer({ min: 1, max: 10_000_000 }), (n) => parseDuration(formatDuration(n)) === n));
  });
});
