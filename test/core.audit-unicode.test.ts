import assert from 'node:assert/strict';
import { verifyAudit } from '../src/audit/verify.ts';
import { appendAudit } from '../src/store/audit-chain.ts';
import { startTestBroker, postForm, type TestBroker } from './helpers/broker.ts';

const b64 = (s: string): string => Buffer.from(s).toString('base64url');

/** Text a caller controls reaches the audit log; whatever it is, the chain must still verify. */
describe('core: audit rows with hostile text', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker();
  });
  after(async () => t?.close());

  it('a lone surrogate in an unverified federated JWT (quoted in the refusal) does not break the chain', async () => {
    // The payload is JSON text with an escaped lone surrogate, legal JSON that UTF-8 cannot store.
    const fake = `${b64('{"alg":"ES256","typ":"JWT","kid":"x"}')}.${b64('{"iss":"https://evil\\ud800","sub":"a","aud":"b","exp":9999999999}')}.${b64('sig')}`;
    const r = await postForm(`${t.url}/token`, {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      client_id: 'cordon-workload',
      subject_token: fake,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'docs:read',
    });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    const v = await verifyAudit(t.b.db);
    assert.equal(v.ok, true, JSON.stringify(v));
  });

  it('a reason cut in the middle of a surrogate pair still verifies', async () => {
    const reason = `${'x'.repeat(499)}😀 tail`; // the 500-character cut splits the emoji
    await t.b.db.transaction((tx) => appendAudit(tx, { at: t.clock.now(), event: 'deny', decision: 'deny', reason, params: { note: `${'y'.repeat(299)}😀` } }));
    const v = await verifyAudit(t.b.db);
    assert.equal(v.ok, true, JSON.stringify(v));
  });
});
