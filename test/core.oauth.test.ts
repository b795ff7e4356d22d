import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { createRemoteJWKSet, decodeJwt, exportJWK, generateKeyPair, jwtVerify } from 'jose';
import { registerAgent } from '../src/agents/registry.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

/**
 * The broker driven over HTTP by openid-client v6 — an OAuth client nobody here wrote — and its
 * tokens checked with jose against the published JWKS, as a resource server would.
 */
describe('core: OAuth surface through openid-client', () => {
  let t: TestBroker;
  let agent: { id: string; secret: string };
  const insecure = { execute: [client.allowInsecureRequests] };
  const tokenTtl = 10 * 60; // support-summarizer's token_ttl

  before(async () => {
    t = await startTestBroker();
    agent = await t.register('summarizer', 'support-summarizer');
  });
  after(async () => {
    await t?.close();
  });

  /** openid-client raises a ResponseBodyError, or a WWWAuthenticateChallengeError when a 401 carries a challenge. */
  const oauthError = (e: unknown): { status: number; error: string | undefined } => {
    const err = e as { status?: number; error?: string; code?: string; cause?: Array<{ parameters?: Record<string, string> }> };
    const error = err.error ?? (err.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE' ? err.cause?.[0]?.parameters?.error : undefined);
    return { status: err.status ?? 0, error };
  };

  const configFor = (auth: client.ClientAuth, id = agent.id, algorithm?: 'oidc' | 'oauth2'): Promise<client.Configuration> =>
    client.discovery(new URL(t.url), id, undefined, auth, { ...insecure, ...(algorithm ? { algorithm } : {}) });

  describe('discovery', () => {
    for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
      it(`serves the metadata DESIGN.md lists at ${path}`, async () => {
        const r = await fetch(`${t.url}${path}`);
        assert.equal(r.status, 200);
        assert.match(r.headers.get('content-type') ?? '', /application\/json/);
        const m = (await r.json()) as Record<string, unknown>;
        assert.equal(m.issuer, t.url);
        assert.equal(m.token_endpoint, `${t.url}/token`);
        assert.equal(m.jwks_uri, `${t.url}/jwks`);
        assert.equal(m.introspection_endpoint, `${t.url}/introspect`);
        assert.equal(m.revocation_endpoint, `${t.url}/revoke`);
        const grants = m.grant_types_supported as string[];
        assert.ok(Array.isArray(grants), 'grant_types_supported is a list');
        assert.ok(grants.includes('client_credentials'), `grant_types_supported: ${grants}`);
        assert.ok(grants.includes('urn:ietf:params:oauth:grant-type:token-exchange'), `grant_types_supported: ${grants}`);
        const methods = m.token_endpoint_auth_methods_supported as string[];
        for (const am of ['client_secret_basic', 'client_secret_post', 'private_key_jwt'])
          assert.ok(methods.includes(am), `token_endpoint_auth_methods_supported lacks ${am}: ${methods}`);
        const dpop = m.dpop_signing_alg_values_supported as string[];
        assert.ok(Array.isArray(dpop) && dpop.length > 0, 'dpop_signing_alg_values_supported is a non-empty list');
        // Nothing this broker does not serve is advertised.
        for (const k of ['authorization_endpoint', 'end_session_endpoint', 'pushed_authorization_request_endpoint', 'id_token_signing_alg_values_supported'])
          assert.equal(m[k], undefined, k);
      });
    }

    it('endpoint URLs come from the issuer, not from the Host header', async () => {
      // fetch will not send a foreign Host header; node:http will.
      const { request } = await import('node:http');
      const m = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const req = request(`${t.url}/.well-known/openid-configuration`, { headers: { host: 'evil.example:1234' } }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve(JSON.parse(body)));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(m.token_endpoint, `${t.url}/token`);
      assert.equal(m.jwks_uri, `${t.url}/jwks`);
    });

    it('openid-client discovers with both issuer algorithms (oidc and oauth2 well-known paths)', async () => {
      for (const alg of ['oidc', 'oauth2'] as const) {
        const c = await configFor(client.ClientSecretBasic(agent.secret), agent.id, alg);
        const m = c.serverMetadata();
        assert.equal(m.issuer, t.url);
        assert.equal(m.token_endpoint, `${t.url}/token`);
        assert.equal(m.introspection_endpoint, `${t.url}/introspect`);
      }
    });
  });

  describe('/jwks', () => {
    it('publishes public keys only, each with a kid and an allowed alg', async () => {
      const r = await fetch(`${t.url}/jwks`);
      assert.equal(r.status, 200);
      const jwks = (await r.json()) as { keys: Array<Record<string, unknown>> };
      assert.ok(jwks.keys.length >= 1);
      for (const k of jwks.keys) {
        for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.ok(!(priv in k), `published key has private member ${priv}`);
        assert.equal(typeof k.kid, 'string');
        assert.ok(['EdDSA', 'ES256'].includes(k.alg as string), `alg ${String(k.alg)}`);
      }
    });
  });

  /** Session start, offline verification, introspection, revocation, introspection again. */
  async function fullCycle(config: client.Configuration, clientId: string, policy: { scope: string; aud: string }): Promise<void> {
    const task = 'TICKET-4711 summarize';
    const tok = await client.clientCredentialsGrant(config, { scope: policy.scope, task });
    assert.equal(tok.token_type.toLowerCase(), 'bearer');
    assert.ok(typeof tok.access_token === 'string');
    assert.ok(typeof tok.expires_in === 'number' && tok.expires_in > 0 && tok.expires_in <= tokenTtl, `expires_in ${tok.expires_in}`);
    assert.equal(tok.scope, policy.scope);

    const jwks = createRemoteJWKSet(new URL(`${t.url}/jwks`));
    const { payload, protectedHeader } = await jwtVerify(tok.access_token, jwks, {
      issuer: t.url,
      audience: policy.aud,
      typ: 'at+jwt',
      algorithms: ['EdDSA', 'ES256'],
      currentDate: new Date(t.clock.now()),
    });
    assert.equal(protectedHeader.typ, 'at+jwt');
    assert.equal(typeof protectedHeader.kid, 'string');
    assert.equal(payload.client_id, clientId);
    assert.equal(payload.sub, clientId);
    assert.equal(payload.scope, policy.scope);
    assert.equal(payload.task, task);
    assert.equal(payload.cordon_depth, 0);
    assert.equal(typeof payload.sid, 'string');
    assert.equal(payload.sid, (tok as Record<string, unknown>).sid, 'the response names the same session as the token');
    assert.equal(typeof payload.jti, 'string');
    assert.ok(payload.iat !== undefined && payload.exp !== undefined && payload.nbf !== undefined);
    assert.ok(payload.exp - payload.iat <= tokenTtl, `exp - iat = ${payload.exp - payload.iat}`);
    assert.ok(payload.exp - payload.iat > 0);

    const active = await client.tokenIntrospection(config, tok.access_token);
    assert.equal(active.active, true);
    assert.equal(active.client_id, clientId);
    assert.equal(active.sub, clientId);
    assert.equal(active.scope, policy.scope);
    assert.equal(active.sid, payload.sid);
    assert.equal(active.exp, payload.exp);
    assert.equal(active.cordon_depth, 0);

    await client.tokenRevocation(config, tok.access_token);
    const after = await client.tokenIntrospection(config, tok.access_token);
    assert.equal(after.active, false);
    assert.deepEqual(Object.keys(after), ['active'], 'an inactive answer says nothing else');
  }

  it('client_secret_basic: session start, jose verification against /jwks, introspect, revoke, introspect', async () => {
    const config = await configFor(client.ClientSecretBasic(agent.secret));
    await fullCycle(config, agent.id, { scope: 'tickets:read crm.contacts:read', aud: t.url });
  });

  it('client_secret_post: the same cycle with the secret in the body', async () => {
    const config = await configFor(client.ClientSecretPost(agent.secret));
    await fullCycle(config, agent.id, { scope: 'tickets:read', aud: t.url });
  });

  it('an allowed resource becomes the token audience', async () => {
    const config = await configFor(client.ClientSecretBasic(agent.secret));
    const tok = await client.clientCredentialsGrant(config, { scope: 'tickets:read', resource: 'https://tickets.internal' });
    const { payload } = await jwtVerify(tok.access_token, createRemoteJWKSet(new URL(`${t.url}/jwks`)), {
      issuer: t.url,
      audience: 'https://tickets.internal',
      typ: 'at+jwt',
      algorithms: ['EdDSA', 'ES256'],
    });
    assert.equal(payload.aud, 'https://tickets.internal');
  });

  it('private_key_jwt: an agent registered with public keys authenticates with a signed assertion', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const kid = 'agent-key-1';
    const pub = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
    const r = await registerAgent(t.b, { name: 'pkjwt-agent', policy: 'support-summarizer', auth: 'private_key_jwt', jwks: { keys: [pub] } });
    assert.equal(r.clientSecret, undefined, 'a private_key_jwt agent gets no secret');
    const config = await configFor(client.PrivateKeyJwt({ key: privateKey, kid }), r.agent.id);
    await fullCycle(config, r.agent.id, { scope: 'tickets:read', aud: t.url });
  });

  it('private_key_jwt: an assertion signed by another key is refused with invalid_client', async () => {
    const { publicKey } = await generateKeyPair('ES256', { extractable: true });
    const { privateKey: other } = await generateKeyPair('ES256', { extractable: true });
    const pub = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    const r = await registerAgent(t.b, { name: 'pkjwt-agent-2', policy: 'support-summarizer', auth: 'private_key_jwt', jwks: { keys: [pub] } });
    const config = await configFor(client.PrivateKeyJwt({ key: other, kid: 'k1' }), r.agent.id);
    await assert.rejects(client.clientCredentialsGrant(config, { scope: 'tickets:read' }), (e: unknown) => {
      assert.deepEqual(oauthError(e), { status: 401, error: 'invalid_client' });
      return true;
    });
  });

  it('a wrong secret is refused with 401 invalid_client, through openid-client and raw HTTP', async () => {
    const config = await configFor(client.ClientSecretBasic('not-the-secret'));
    await assert.rejects(client.clientCredentialsGrant(config, { scope: 'tickets:read' }), (e: unknown) => {
      assert.deepEqual(oauthError(e), { status: 401, error: 'invalid_client' });
      return true;
    });
    const post = await postForm(`${t.url}/token`, {
      grant_type: 'client_credentials',
      scope: 'tickets:read',
      client_id: agent.id,
      client_secret: `${agent.secret}x`,
    });
    assert.equal(post.status, 401);
    assert.equal(post.body.error, 'invalid_client');
    // The same wrong secret at the broker's own endpoints.
    const intro = await postForm(`${t.url}/introspect`, { token: 'x.y.z' }, { authorization: basic(agent.id, 'nope') });
    assert.equal(intro.status, 401);
    assert.equal(intro.body.error, 'invalid_client');
    const rev = await postForm(`${t.url}/revoke`, { token: 'x.y.z' }, { authorization: basic(agent.id, 'nope') });
    assert.equal(rev.status, 401);
    assert.equal(rev.body.error, 'invalid_client');
  });

  it('a token decoded without verification carries the same claims introspection reports', async () => {
    const config = await configFor(client.ClientSecretBasic(agent.secret));
    const tok = await client.clientCredentialsGrant(config, { scope: 'crm.contacts:read', task: 't-2' });
    const claims = decodeJwt(tok.access_token);
    const i = await client.tokenIntrospection(config, tok.access_token);
    assert.equal(i.active, true);
    assert.equal(i.jti, claims.jti);
    assert.equal(i.task, 't-2');
  });
});
