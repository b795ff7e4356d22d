import assert from 'node:assert/strict';
import { revocationOptions, revokesAsWorkload } from '../src/revocation/request.ts';
import { CordonError } from '../src/errors.ts';

const refusal = (code: string, description: RegExp) => (e: unknown) => e instanceof CordonError && e.code === code && description.test(e.description);

describe('revocation: who revokes, and how', () => {
  it('the public workload client is the caller only when it is named and no credential is presented', () => {
    assert.equal(revokesAsWorkload({ clientId: 'cordon-workload', presentsCredentials: false }), true);
    assert.equal(revokesAsWorkload({ clientId: 'cordon-workload', presentsCredentials: true }), false, 'a credential means authenticating as an agent');
    assert.equal(revokesAsWorkload({ clientId: undefined, presentsCredentials: false }), false);
    assert.equal(revokesAsWorkload({ clientId: 'agt_other', presentsCredentials: false }), false);
  });

  it('end_session is true or false; only access tokens may be hinted', () => {
    assert.deepEqual(revocationOptions({ tokenTypeHint: undefined, endSession: undefined }), { endSession: false });
    assert.deepEqual(revocationOptions({ tokenTypeHint: 'access_token', endSession: 'true' }), { endSession: true });
    assert.deepEqual(revocationOptions({ tokenTypeHint: undefined, endSession: 'false' }), { endSession: false });
    assert.throws(() => revocationOptions({ tokenTypeHint: undefined, endSession: 'yes' }), refusal('invalid_request', /end_session must be true or false/));
    assert.throws(() => revocationOptions({ tokenTypeHint: 'refresh_token', endSession: undefined }), refusal('unsupported_token_type', /only access tokens/));
  });
});
