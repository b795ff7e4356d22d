import assert from 'node:assert/strict';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { registerAgent } from '../src/tokens/agents.ts';
import { startTestBroker, postForm, type TestBroker } from './helpers/broker.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** A private_key_jwt client assertion authenticates one request, once, anywhere. */
describe('core: client assertion replay', () => {
  let t: TestBroker;
  let sign: (jti: string) => Promise<string>;
  before(async () => {
    t = await startTestBroker();
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
    const id = (await registerAgent(t.b, { name: 'pkjwt', policy: 'research-planner', auth: 'private_key_jwt', jwks: { keys: [jwk] } })).agent.id;
    sign = (jti) => {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(id).setSubject(id).setAudience(`${t.url}/token`).setJti(jti).setIssuedAt(now).setExpirationTime(now + 60).sign(privateKey);
    };
  });
  after(async () => t?.close());

  it('sent concurrently to /token, exactly one use succeeds', async () => {
    const form = { grant_type: 'client_credentials', scope: 'docs:read', client_assertion_type: ASSERTION_TYPE, client_assertion: await sign('race-1') };
    const res = await Promise.all(Array.from({ length: 8 }, () => postForm(`${t.url}/token`, form)));
    assert.deepEqual(res.map((r) => r.status).sort(), [200, 401, 401, 401, 401, 401, 401, 401]);
    assert.equal((await postForm(`${t.url}/token`, form)).status, 401, 'and later too');
  });

  it('used at /token, it is refused at /introspect and /revoke', async () => {
    const a = await sign('cross-1');
    const first = await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:read', client_assertion_type: ASSERTION_TYPE, client_assertion: a });
    assert.equal(first.status, 200);
    for (const path of ['/introspect', '/revoke']) {
      const r = await postForm(`${t.url}${path}`, { token: first.body.access_token, client_assertion_type: ASSERTION_TYPE, client_assertion: a });
      assert.equal(r.status, 401, path);
      assert.equal(r.body.error, 'invalid_client', path);
    }
  });
});
