import assert from 'node:assert/strict';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { registerAgent } from '../src/agents/registry.ts';
import { startTestBroker, postForm, type TestBroker } from './helpers/broker.ts';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** A private_key_jwt client assertion authenticates one request, once, anywhere. */
describe('core: client assertion replay', () => {
  let t: TestBroker;
  let sign: (jti: string, at?: number, lifeSec?: number) => Promise<string>;
  before(async () => {
    t = await startTestBroker();
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
    const id = (await registerAgent(t.b, { name: 'pkjwt', policy: 'research-planner', auth: 'private_key_jwt', jwks: { keys: [jwk] } })).agent.id;
    sign = (jti, at = Date.now(), lifeSec = 60) => {
      const now = Math.floor(at / 1000);
      return new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuer(id)
        .setSubject(id)
        .setAudience(`${t.url}/token`)
        .setJti(jti)
        .setIssuedAt(now)
        .setExpirationTime(now + lifeSec)
        .sign(privateKey);
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
    const first = await postForm(`${t.url}/token`, {
      grant_type: 'client_credentials',
      scope: 'docs:read',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: a,
    });
    assert.equal(first.status, 200);
    for (const path of ['/introspect', '/revoke']) {
      const r = await postForm(`${t.url}${path}`, { token: first.body.access_token, client_assertion_type: ASSERTION_TYPE, client_assertion: a });
      assert.equal(r.status, 401, path);
      assert.equal(r.body.error, 'invalid_client', path);
    }
  });

  it('within the tolerated skew after its exp, an assertion is still good once at /introspect, not twice', async () => {
    const tok = await postForm(`${t.url}/token`, {
      grant_type: 'client_credentials',
      scope: 'docs:read',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: await sign('skew-setup'),
    });
    assert.equal(tok.status, 200);
    const start = t.clock.now();
    try {
      const a = await sign('skew-1', start, 60);
      t.clock.set(start + 60_000 + (t.b.config.clockSkewSec * 1000) / 2); // past exp, inside the skew
      const use = () => postForm(`${t.url}/introspect`, { token: tok.body.access_token, client_assertion_type: ASSERTION_TYPE, client_assertion: a });
      assert.equal((await use()).status, 200);
      const again = await use();
      assert.equal(again.status, 401, JSON.stringify(again.body));
      assert.match(again.body.error_description, /used before/);
    } finally {
      t.clock.set(start);
    }
  });

  describe('times are judged on the broker clock at every endpoint, /token included', () => {
    afterEach(() => t.clock.set(Date.now())); // back to real time (the wall clock moves on while the suite runs)
    const tokenWith = (a: string) =>
      postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:read', client_assertion_type: ASSERTION_TYPE, client_assertion: a });

    it('an assertion still valid on the wall clock but expired on the broker clock is refused (and audited)', async () => {
      const a = await sign('clock-exp', Date.now(), 60);
      t.clock.set(Date.now() + 5 * 60_000); // beyond exp plus the allowed skew
      const seqBefore = (await t.b.db('audit').max('seq as m').first())?.m;
      const r = await tokenWith(a);
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.equal(r.body.error, 'invalid_client');
      assert.match(r.body.error_description, /expired/);
      const rows = await t.b.db('audit').where('seq', '>', seqBefore ?? 0);
      assert.ok(
        rows.some((x: { decision: string; reason: string }) => x.decision === 'deny' && /client_assertion has expired/.test(x.reason)),
        'the refusal is audited',
      );
      for (const path of ['/introspect', '/revoke']) {
        const other = await postForm(`${t.url}${path}`, {
          token: 'x',
          client_assertion_type: ASSERTION_TYPE,
          client_assertion: await sign(`clock-exp-${path}`, Date.now(), 60),
        });
        assert.equal(other.status, 401, path);
        assert.match(other.body.error_description, /expired|could not be verified/, path);
      }
    });

    it('an assertion issued in the broker clock’s future is refused; the same one is accepted once the clock gets there', async () => {
      // Valid on the wall clock (iat now); the broker clock is behind by more than the skew.
      t.clock.set(Date.now() - 5 * 60_000);
      const early = await tokenWith(await sign('clock-future-1'));
      assert.equal(early.status, 401, JSON.stringify(early.body));
      assert.match(early.body.error_description, /future|not valid yet/);
      t.clock.set(Date.now());
      assert.equal((await tokenWith(await sign('clock-future-2'))).status, 200);
    });

    it('an assertion living longer than ten minutes is refused at /token as at /introspect', async () => {
      const long = await tokenWith(await sign('too-long', Date.now(), 3600));
      assert.equal(long.status, 401, JSON.stringify(long.body));
      assert.match(long.body.error_description, /too long/);
    });
  });
});
