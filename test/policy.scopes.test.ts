import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CordonError } from '../src/errors.ts';
import { covers, coversAll, credNames, formatScope, intersect, intersectAll, isScopeToken, isWildcard, parseScope, uncovered } from '../src/policy/scopes.ts';

// A tiny alphabet so generated tokens collide, share prefixes and cover each other often.
const token = fc.tuple(fc.stringMatching(/^[ab:*]{1,4}$/), fc.boolean()).map(([base, wild]) => (wild ? `${base}*` : base));
const anyToken = fc.oneof(token, fc.constant('*'));
const list = fc.array(anyToken, { maxLength: 6 });
const sameSet = (x: readonly string[], y: readonly string[]) => assert.deepEqual([...x].sort(), [...y].sort());

describe('policy/scopes', () => {
  describe('parseScope / formatScope', () => {
    it('splits on single spaces and dedupes in order', () => {
      assert.deepEqual(parseScope('b a b cred:x a'), ['b', 'a', 'cred:x']);
      assert.deepEqual(parseScope(''), []);
      assert.equal(formatScope(['a', 'b', 'a']), 'a b');
    });

    for (const bad of ['a  b', ' a', 'a ', 'a\tb', 'a"b', 'a\\b', 'é', 'a\nb', ' '])
      it(`rejects ${JSON.stringify(bad)} as invalid_scope`, () => {
        assert.throws(
          () => parseScope(bad),
          (e: unknown) => e instanceof CordonError && e.code === 'invalid_scope',
        );
      });

    it('accepts the full RFC 6749 scope-token alphabet', () => {
      const all = Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i)).filter((c) => c !== '"' && c !== '\\');
      for (const c of all) assert.ok(isScopeToken(c), c);
      assert.ok(!isScopeToken(''));
      assert.ok(!isScopeToken('"'));
      assert.ok(!isScopeToken('\\'));
      assert.ok(!isScopeToken('\x7f'));
    });

    it('formatScope refuses what parseScope would refuse', () => {
      assert.throws(() => formatScope(['a b']), CordonError);
      assert.throws(() => formatScope(['']), CordonError);
    });

    it('round-trips', () => {
      fc.assert(fc.property(list, (l) => assert.deepEqual(parseScope(formatScope(l)), [...new Set(l)])));
    });
  });

  describe('covers', () => {
    it('matches exactly without wildcards', () => {
      assert.ok(covers(['tickets:read'], 'tickets:read'));
      assert.ok(!covers(['tickets:read'], 'tickets:write'));
      assert.ok(!covers(['tickets:read'], 'tickets:read:all'));
      assert.ok(!covers([], 'a'));
    });

    it('treats a trailing * as a prefix wildcard', () => {
      const held = ['tickets:*'];
      for (const w of ['tickets:read', 'tickets:*', 'tickets:x:y', 'tickets:', 'tickets:a:*']) assert.ok(covers(held, w), w);
      for (const w of ['tickets', 'ticketsx', 'tickets*', 'crm:read', '*']) assert.ok(!covers(held, w), w);
    });

    it('a narrower wildcard does not cover a broader one', () => {
      assert.ok(!covers(['tickets:a:*'], 'tickets:*'));
      assert.ok(!covers(['x**'], 'x*'));
    });

    it('the lone * is a literal, never "everything"', () => {
      assert.ok(!isWildcard('*'));
      assert.ok(!covers(['*'], 'tickets:read'));
      assert.ok(covers(['*'], '*'));
    });

    it('coversAll / uncovered', () => {
      assert.ok(coversAll(['a:*', 'b'], ['a:x', 'b']));
      assert.ok(coversAll(['a'], []));
      assert.deepEqual(uncovered(['a:*', 'b'], ['a:x', 'c', 'b', 'd', 'c']), ['c', 'd']);
    });

    it('is reflexive', () => {
      fc.assert(fc.property(list, anyToken, (l, x) => covers([...l, x], x)));
    });

    it('is transitive', () => {
      fc.assert(
        fc.property(anyToken, anyToken, anyToken, (a, b, c) => !(covers([a], b) && covers([b], c)) || covers([a], c)),
        { numRuns: 5000 },
      );
    });

    it('uncovered is empty exactly when coversAll holds', () => {
      fc.assert(fc.property(list, list, (h, w) => (uncovered(h, w).length === 0) === coversAll(h, w)));
    });
  });

  describe('intersect', () => {
    it('keeps the more specific side', () => {
      assert.deepEqual(intersect(['tickets:*'], ['tickets:read', 'crm:read']), ['tickets:read']);
      assert.deepEqual(intersect(['x:*', 'y'], ['x:a:*', 'y', 'z']), ['y', 'x:a:*']);
      assert.deepEqual(intersect(['a'], ['b']), []);
      assert.deepEqual(intersect([], ['b']), []);
    });

    it('its result is covered by both sides', () => {
      fc.assert(fc.property(list, list, (a, b) => coversAll(a, intersect(a, b)) && coversAll(b, intersect(a, b))));
    });

    it('is commutative (same set, order aside)', () => {
      fc.assert(fc.property(list, list, (a, b) => sameSet(intersect(a, b), intersect(b, a))));
    });

    it('is exact: covers(a ∩ b, s) iff covers(a, s) and covers(b, s)', () => {
      fc.assert(
        fc.property(list, list, anyToken, (a, b, s) => covers(intersect(a, b), s) === (covers(a, s) && covers(b, s))),
        { numRuns: 5000 },
      );
    });

    it('has no duplicates', () => {
      fc.assert(fc.property(list, list, (a, b) => new Set(intersect(a, b)).size === intersect(a, b).length));
    });

    it('intersectAll folds, and is empty with no lists (deny by default)', () => {
      assert.deepEqual(intersectAll(), []);
      assert.deepEqual(intersectAll(['a', 'a', 'b']), ['a', 'b']);
      sameSet(intersectAll(['t:*', 'd:read'], ['t:read', 'd:*'], ['t:read', 'd:read', 'z']), ['t:read', 'd:read']);
      fc.assert(fc.property(list, list, list, anyToken, (a, b, c, s) => covers(intersectAll(a, b, c), s) === (covers(a, s) && covers(b, s) && covers(c, s))));
    });
  });

  it('credNames takes exact cred:NAME scopes only', () => {
    assert.deepEqual(credNames(['cred:a', 'tickets:read', 'cred:b', 'cred:a', 'cred:', 'cred:*', 'cred:x*', 'xcred:c']), ['a', 'b']);
  });
});
