import assert from 'node:assert/strict';
import { newId, newJti, isWellFormedId } from '../src/ids.ts';

describe('ids', () => {
  it('are 128 random bits, well-formed, and never repeat across refills of the random pool', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const jti = newJti();
      const id = newId('ses');
      assert.match(jti, /^[A-Za-z0-9_-]{22}$/);
      assert.match(id, /^ses_[A-Za-z0-9_-]{22}$/);
      assert.ok(isWellFormedId(id) && isWellFormedId(jti));
      seen.add(jti).add(id.slice(4));
    }
    assert.equal(seen.size, 4000, 'no 16-byte draw was handed out twice');
  });
});
