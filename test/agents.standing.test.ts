import assert from 'node:assert/strict';
import { assertMayUse } from '../src/agents/standing.ts';
import { CordonError } from '../src/errors.ts';

const refusal = (code: string, description: RegExp) => (e: unknown) => e instanceof CordonError && e.code === code && description.test(e.description);

describe('agents: what an authenticated agent may use, by its standing', () => {
  it('an active agent may introspect and revoke (no policy is consulted)', () => {
    assert.doesNotThrow(() => assertMayUse({ status: 'active' }, 'introspect'));
    assert.doesNotThrow(() => assertMayUse({ status: 'active' }, 'revoke'));
  });

  it('a disabled agent may revoke what it holds, and nothing else', () => {
    assert.doesNotThrow(() => assertMayUse({ status: 'disabled' }, 'revoke'));
    assert.throws(() => assertMayUse({ status: 'disabled' }, 'introspect'), refusal('invalid_client', /agent is disabled/));
  });
});
