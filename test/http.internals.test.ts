import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Provider, { type Adapter, type AdapterPayload, type KoaContextWithOIDC } from 'oidc-provider';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import {
  PROVIDER_BODY_LIMIT,
  assertionReplayId,
  beforeHeadWritten,
  methodsRoutedAt,
  providerBody,
  providerClient,
  providerParams,
  providerRequestState,
  replaceClientSecretCheck,
  responseStarted,
} from '../src/http/internals.ts';
import { assertionReplayKey } from '../src/agents/client-assertion.ts';
import { registerAgent } from '../src/agents/registry.ts';
import { replayGuard } from '../src/store/replay.ts';
import { startTestBroker, basic, postForm } from './helpers/broker.ts';

/**
 * Contract tests for src/http/internals.ts: each exercises the installed library (express,
 * oidc-provider, node:http) and fails if an upgrade changes what Cordon relies on. Run this file
 * after upgrading any of them.
 */

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('library internals (src/http/internals.ts) still behave as relied on', () => {
  describe('node:http', () => {
    it('beforeHeadWritten: res.json, res.send and res.end all go through writeHead, while headers can still be set', async () => {
      const seen: Array<{ path: string; headersSent: boolean }> = [];
      const app = express();
      app.use((req, res, next) => {
        beforeHeadWritten(res, () => {
          seen.push({ path: req.path, headersSent: res.headersSent });
          res.setHeader('X-Hooked', 'yes');
        });
        next();
      });
      app.get('/json', (_req, res) => void res.json({ ok: true }));
      app.get('/send', (_req, res) => void res.status(201).send('text'));
      app.get('/end', (_req, res) => void res.end());
      app.get('/missing', (_req, _res, next) => next()); // express's own 404
      const s = await serve(app);
      try {
        for (const path of ['/json', '/send', '/end', '/missing']) {
          const r = await fetch(`${s.url}${path}`);
          await r.arrayBuffer();
          assert.equal(r.headers.get('x-hooked'), 'yes', path);
        }
        assert.deepEqual(
          seen,
          ['/json', '/send', '/end', '/missing'].map((path) => ({ path, headersSent: false })),
        );
      } finally {
        await s.close();
      }
    });

    it('responseStarted: a socket’s _httpMessage.headersSent is false until the response head is written, then true', async () => {
      const observed: boolean[] = [];
      const s = await serve((req, res) => {
        observed.push(responseStarted(req.socket));
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.flushHeaders();
        observed.push(responseStarted(req.socket));
        res.end('done');
      });
      try {
        assert.equal(await (await fetch(s.url)).text(), 'done');
        assert.deepEqual(observed, [false, true]);
      } finally {
        await s.close();
      }
    });
  });

  describe('express', () => {
    it('methodsRoutedAt: router.stack layers expose route.methods and match(path)', () => {
      const app = express();
      app.use((_req, _res, next) => next()); // a middleware layer has no route and is skipped
      app.get('/a', (_req, res) => void res.end());
      app.post('/a', (_req, res) => void res.end());
      app.delete('/b/:name', (_req, res) => void res.end());
      app.post('/c', (_req, res) => void res.end());
      const layers = (app as unknown as { router: { stack: Array<{ route?: { methods: unknown }; match: unknown }> } }).router.stack;
      assert.ok(layers.some((l) => l.route && typeof l.route.methods === 'object' && typeof l.match === 'function'));
      assert.deepEqual(methodsRoutedAt(app, '/a'), ['GET', 'HEAD', 'POST']);
      assert.deepEqual(methodsRoutedAt(app, '/b/x'), ['DELETE']);
      assert.deepEqual(methodsRoutedAt(app, '/c'), ['POST']);
      assert.deepEqual(methodsRoutedAt(app, '/d'), []);
    });
  });

  describe('oidc-provider, on a bare provider', () => {
    const GRANT = 'urn:cordon:test:grant';
    const stateSeen: Array<Record<string, unknown> | undefined> = [];
    const clients: Record<string, AdapterPayload> = {
      basic: {
        client_id: 'basic',
        client_secret: 'stored-basic',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: [GRANT],
        response_types: [],
        redirect_uris: [],
      },
      post: {
        client_id: 'post',
        client_secret: 'stored-post',
        token_endpoint_auth_method: 'client_secret_post',
        grant_types: [GRANT],
        response_types: [],
        redirect_uris: [],
      },
    };
    class TestAdapter implements Adapter {
      constructor(readonly model: string) {}
      async find(id: string): Promise<AdapterPayload | undefined> {
        if (this.model !== 'Client') return undefined;
        const state = providerRequestState();
        stateSeen.push(state);
        if (state) state.foundClient = id;
        return clients[id];
      }
      async upsert(): Promise<void> {}
      async findByUserCode(): Promise<undefined> {
        return undefined;
      }
      async findByUid(): Promise<undefined> {
        return undefined;
      }
      async consume(): Promise<void> {}
      async destroy(): Promise<void> {}
      async revokeByGrantId(): Promise<void> {}
    }
    const compared: Array<[string, string | null]> = [];
    let s: Awaited<ReturnType<typeof serve>>;
    before(async () => {
      const { privateKey } = await generateKeyPair('ES256', { extractable: true });
      const jwk = { ...(await exportJWK(privateKey)), kid: 'k', alg: 'ES256', use: 'sig' };
      const provider = new Provider('http://127.0.0.1', {
        adapter: TestAdapter,
        jwks: { keys: [jwk] },
        clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
        clientDefaults: { grant_types: [GRANT], response_types: [], id_token_signed_response_alg: 'ES256' },
        enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
        features: { devInteractions: { enabled: false } },
        routes: { token: '/token' },
        responseTypes: ['none'],
        pkce: { required: () => false },
        renderError: async (ctx, out) => {
          ctx.type = 'json';
          ctx.body = out;
        },
      });
      replaceClientSecretCheck(provider, (presented, stored) => {
        compared.push([presented, stored]);
        return presented === `right-${stored}`;
      });
      provider.registerGrantType(
        GRANT,
        (ctx: KoaContextWithOIDC) => {
          ctx.body = {
            params: providerParams(ctx),
            body: providerBody(ctx),
            client: { clientId: providerClient(ctx)?.clientId, clientAuthMethod: providerClient(ctx)?.clientAuthMethod },
            state: ctx.state.foundClient,
          };
        },
        ['one', 'many'],
        ['many'],
      );
      const callback = provider.callback();
      s = await serve((req, res) => void callback(req, res));
    });
    after(() => s?.close());
    beforeEach(() => {
      compared.length = 0;
      stateSeen.length = 0;
    });

    it('replaceClientSecretCheck: client_secret_basic and client_secret_post secrets are checked by compareClientSecret against the stored client_secret', async () => {
      const ok = await postForm(`${s.url}/token`, { grant_type: GRANT }, { authorization: basic('basic', 'right-stored-basic') });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      const bad = await postForm(`${s.url}/token`, { grant_type: GRANT }, { authorization: basic('basic', 'stored-basic') });
      assert.equal(bad.status, 401, 'the stored value itself is not a secret once the check is replaced');
      assert.equal(bad.body.error, 'invalid_client');
      const post = await postForm(`${s.url}/token`, { grant_type: GRANT, client_id: 'post', client_secret: 'right-stored-post' });
      assert.equal(post.status, 200, JSON.stringify(post.body));
      assert.deepEqual(compared, [
        ['right-stored-basic', 'stored-basic'],
        ['stored-basic', 'stored-basic'],
        ['right-stored-post', 'stored-post'],
      ]);
    });

    it('providerRequestState: Provider.ctx is the request’s context inside adapter calls, and its state reaches the grant', async () => {
      const r = await postForm(`${s.url}/token`, { grant_type: GRANT }, { authorization: basic('basic', 'right-stored-basic') });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.ok(stateSeen.length > 0 && stateSeen.every((x) => typeof x === 'object' && x !== null), 'the adapter ran inside the request');
      assert.equal(r.body.state, 'basic');
      assert.equal(providerRequestState(), undefined, 'and outside a request there is none');
    });

    it('providerParams, providerBody and providerClient: the shapes grants read', async () => {
      const r = await postForm(
        `${s.url}/token`,
        { grant_type: GRANT, one: 'x', many: ['a', 'b'], unknown: 'u' },
        { authorization: basic('basic', 'right-stored-basic') },
      );
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.params.grant_type, GRANT);
      assert.equal(r.body.params.one, 'x');
      assert.deepEqual(r.body.params.many, ['a', 'b'], 'a parameter allowing duplicates is an array');
      assert.equal('unknown' in r.body.params, false, 'parameters the grant did not register are not in params');
      assert.equal(r.body.body.unknown, 'u', 'but they are in the body');
      assert.deepEqual(r.body.client, { clientId: 'basic', clientAuthMethod: 'client_secret_basic' });
      const dup = await postForm(`${s.url}/token`, { grant_type: GRANT, one: ['x', 'y'] }, { authorization: basic('basic', 'right-stored-basic') });
      assert.equal(dup.status, 400, 'a parameter not allowing duplicates is refused when repeated (grants/params.ts relies on it)');
    });

    it('PROVIDER_BODY_LIMIT: the provider refuses a form body over 56 KiB and reads one at the limit', async () => {
      const padded = (n: number) => `grant_type=${encodeURIComponent(GRANT)}&pad=`.padEnd(n, 'p');
      const at = await fetch(`${s.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic('basic', 'right-stored-basic') },
        body: padded(PROVIDER_BODY_LIMIT),
      });
      assert.equal(at.status, 200, await at.text());
      const over = await fetch(`${s.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic('basic', 'right-stored-basic') },
        body: padded(PROVIDER_BODY_LIMIT + 1),
      });
      assert.equal(over.status, 400);
      assert.match(((await over.json()) as { error_description: string }).error_description, /failed to parse the request body/);
    });
  });

  describe('oidc-provider, through a test broker', () => {
    it('assertionReplayId: the ReplayDetection id of a private_key_jwt assertion at /token is SHA-256(iss ‖ jti)', async () => {
      const t = await startTestBroker();
      const claimed: string[] = [];
      // eslint-disable-next-line @typescript-eslint/unbound-method -- restored below; applied with its object
      const claim = replayGuard.claim;
      replayGuard.claim = async (...args) => {
        claimed.push(args[1]);
        return claim.apply(replayGuard, args);
      };
      try {
        const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
        const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
        const id = (await registerAgent(t.b, { name: 'pkjwt', policy: 'research-planner', auth: 'private_key_jwt', jwks: { keys: [jwk] } })).agent.id;
        const now = Math.floor(Date.now() / 1000);
        const assertion = await new SignJWT({})
          .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
          .setIssuer(id)
          .setSubject(id)
          .setAudience(`${t.url}/token`)
          .setJti('contract-jti')
          .setIssuedAt(now)
          .setExpirationTime(now + 60)
          .sign(privateKey);
        const r = await postForm(`${t.url}/token`, {
          grant_type: 'client_credentials',
          scope: 'docs:read',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.deepEqual(
          claimed.filter((k) => k.startsWith('assert:')),
          [assertionReplayKey(assertionReplayId(id, 'contract-jti'))],
        );
      } finally {
        replayGuard.claim = claim;
        await t.close();
      }
    });
  });
});
