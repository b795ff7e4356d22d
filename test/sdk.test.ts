import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { decodeJwt, exportJWK, generateKeyPair } from 'jose';
import { CordonAgent, CordonSdkError, DpopKey, toAwsIdentity, type FetchLike } from '../src/index.ts';
import { registerAgent } from '../src/agents/registry.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { introspect } from '../src/tokens/introspect.ts';
import { basic, postForm, startTestBroker, type TestBroker } from './helpers/broker.ts';

const MIN = 60_000;
const AUD = 'https://tickets.example';

async function rejectsWith(p: Promise<unknown>, code: string, match?: RegExp): Promise<CordonSdkError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof CordonSdkError, `expected CordonSdkError, got ${(e as Error)?.stack ?? String(e)}`);
    assert.equal(e.code, code, e.message);
    if (match) assert.match(e.message, match);
    return e;
  }
  assert.fail(`expected a CordonSdkError ${code}`);
}

describe('sdk: CordonAgent against a real broker', () => {
  let t: TestBroker;
  let orch: { id: string; secret: string };
  let worker: { id: string; secret: string };
  let bound: { id: string; secret: string };

  before(async () => {
    t = await startTestBroker({ policyDir: resolve('examples/policies') });
    orch = await t.register('orch', 'example-orchestrator');
    worker = await t.register('worker', 'example-worker');
    bound = await t.register('bound', 'example-bound');
  });
  after(async () => {
    await t?.close();
  });

  const agentFor = (who: { id: string; secret: string }, extra: Partial<ConstructorParameters<typeof CordonAgent>[0]> = {}) =>
    new CordonAgent({ issuer: t.url, clientId: who.id, clientSecret: who.secret, clock: t.clock, random: () => 0, ...extra });

  it('opens a session and keeps the same token until its refresh time', async () => {
    const a = agentFor(orch);
    const s = await a.startSession({ scope: 'tickets:read', task: 'T-1', audience: AUD });
    assert.match(s.sid, /^ses_/);
    assert.deepEqual(s.scope, ['tickets:read']);
    assert.equal(s.tokenType, 'Bearer');
    assert.ok(s.expiresAt! > t.clock.now());
    const tok = await a.token();
    const c = decodeJwt(tok);
    assert.equal(c.sid, s.sid);
    assert.equal(c.aud, AUD);
    assert.equal(c.task, 'T-1');
    t.clock.advance(5 * MIN);
    assert.equal(await a.token(), tok, 'half way through its life the token is still served from cache');
    await a.close();
  });

  it('refreshes across token expiry (session=<sid>) on the injected clock, never past the session end, then fails with session_ended', async () => {
    const a = agentFor(orch);
    const s = await a.startSession({ scope: 'tickets:read', audience: AUD });
    const seen = new Set<string>();
    let last = await a.token();
    seen.add(last);
    // token_ttl 10m, session_ttl 1h: step 9 minutes at a time.
    let ended: CordonSdkError | null = null;
    for (let i = 0; i < 10 && !ended; i++) {
      t.clock.advance(9 * MIN);
      try {
        const tok = await a.token();
        const c = decodeJwt(tok);
        assert.equal(c.sid, s.sid, 'same session');
        assert.ok(c.exp! * 1000 <= s.expiresAt!, 'never past the session end');
        assert.ok(c.exp! * 1000 > t.clock.now(), 'valid now');
        assert.equal((await introspect(t.b, tok)).active, true, 'the broker agrees it is active');
        seen.add(tok);
        last = tok;
      } catch (e) {
        ended = e as CordonSdkError;
      }
    }
    assert.ok(seen.size >= 6, `refreshed several times (${seen.size} tokens)`);
    assert.ok(ended, 'the session ended');
    assert.equal(ended.code, 'session_ended');
    assert.ok(t.clock.now() >= s.expiresAt!, 'only once the session is over');
    await rejectsWith(a.token(), 'session_ended');
  });

  it('refresh is refused once the session was revoked: session_ended with the broker error', async () => {
    const a = agentFor(orch);
    const s = await a.startSession({ scope: 'tickets:read', audience: AUD });
    await a.token();
    await revokeSession(t.b, s.sid, { actor: 'test', via: 'test' });
    t.clock.advance(9 * MIN);
    const e = await rejectsWith(a.token(), 'session_ended', /revoked/);
    assert.equal(e.error, 'invalid_grant');
    await rejectsWith(a.token(), 'session_ended');
    await a.close(); // nothing left to revoke; must not throw
  });

  it('concurrent token() calls at refresh time share one request to the broker', async () => {
    let tokenCalls = 0;
    const f: FetchLike = async (u, init) => {
      if (u.endsWith('/token')) tokenCalls++;
      return fetch(u, init);
    };
    const a = agentFor(orch, { fetch: f });
    await a.startSession({ scope: 'tickets:read', audience: AUD });
    t.clock.advance(9 * MIN);
    const before = tokenCalls;
    const all = await Promise.all(Array.from({ length: 10 }, () => a.token()));
    assert.equal(tokenCalls - before, 1);
    assert.equal(new Set(all).size, 1);
    await a.close();
  });

  it('a broker hiccup during refresh keeps serving the still-valid token, then refreshes when the broker is back', async () => {
    let down = false;
    const f: FetchLike = async (u, init) => {
      if (down) throw new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } });
      return fetch(u, init);
    };
    const a = agentFor(orch, { fetch: f });
    await a.startSession({ scope: 'tickets:read', audience: AUD });
    const first = await a.token();
    t.clock.advance(9 * MIN);
    down = true;
    assert.equal(await a.token(), first, 'still valid for a minute: served');
    t.clock.advance(MIN);
    await rejectsWith(a.token(), 'network', /ECONNREFUSED/);
    down = false;
    // The expired token's session is still live: the next call renews.
    const next = await a.token();
    assert.notEqual(next, first);
    await a.close();
  });

  it('revoke() revokes every token of the session it holds (refreshed ones too) and ends it locally', async () => {
    const a = agentFor(orch);
    await a.startSession({ scope: 'tickets:read', audience: AUD });
    const t1 = await a.token();
    t.clock.advance(9 * MIN);
    const t2 = await a.token();
    assert.notEqual(t1, t2);
    await a.revoke();
    assert.equal((await introspect(t.b, t1)).active, false);
    assert.equal((await introspect(t.b, t2)).active, false);
    await rejectsWith(a.token(), 'session_ended', /revoked by this agent/);
    await a.close();
    await rejectsWith(a.token(), 'closed');
  });

  it('revoke() ends the session even when every token it holds has expired: a fresh token of the session first, then end_session', async () => {
    const calls: string[] = [];
    const f: FetchLike = async (u, init) => {
      calls.push(`${new URL(u).pathname} ${String(init?.body ?? '')}`);
      return fetch(u, init);
    };
    const a = agentFor(orch, { fetch: f });
    const s = await a.startSession({ scope: 'tickets:read', audience: AUD });
    const t1 = await a.token();
    t.clock.advance(11 * MIN); // token_ttl 10m: nothing the agent holds is alive, the session (1h) is
    await a.revoke();
    const row = await t.b.db('sessions').where({ sid: s.sid }).first();
    assert.notEqual(row.revoked_at, null, 'the session itself was ended');
    const renew = calls.find((c) => c.startsWith('/token ') && c.includes(`session=${s.sid}`));
    assert.ok(renew, 'renewed with session=<sid>');
    assert.match(renew, /expires_in=60/, 'a short-lived token, only for ending the session');
    assert.ok(calls.at(-1)!.startsWith('/revoke ') && calls.at(-1)!.includes('end_session=true'));
    // Nothing of it can be renewed any more.
    const r = await postForm(
      `${t.url}/token`,
      { grant_type: 'client_credentials', scope: 'tickets:read', session: s.sid },
      { authorization: basic(orch.id, orch.secret) },
    );
    assert.equal(r.body.error, 'invalid_grant', JSON.stringify(r.body));
    assert.equal((await introspect(t.b, t1)).active, false);
  });

  it('revoke() once every token expired and the session already ended at the broker: invalid_grant on the renewal means done', async () => {
    const a = agentFor(orch);
    const s = await a.startSession({ scope: 'tickets:read', audience: AUD });
    await revokeSession(t.b, s.sid, { actor: 'test', via: 'test' });
    t.clock.advance(11 * MIN);
    await a.revoke(); // must not throw
    await rejectsWith(a.token(), 'session_ended');
    // A session that reached its end is not asked about at all.
    let calls = 0;
    const b2 = agentFor(orch, { fetch: async (u, init) => (calls++, fetch(u, init)) });
    await b2.startSession({ scope: 'tickets:read', audience: AUD });
    t.clock.advance(61 * MIN);
    const before = calls;
    await b2.close();
    assert.equal(calls, before, 'past the session end there is nothing to end');
  });

  it('credentials() hands out nothing cached once the agent knows the session ended', async () => {
    const f: FetchLike = async (u, init) => {
      if (u.includes('/credentials/')) {
        const exp = new Date(t.clock.now() + 10 * MIN).toISOString();
        return Response.json({
          name: 'reports-s3',
          provider: 'aws-sts',
          expires_at: exp,
          credentials: { AccessKeyId: 'ASIACACHED', SecretAccessKey: 's', SessionToken: 'st', Expiration: exp },
        });
      }
      return fetch(u, init);
    };
    const a = agentFor(orch, { fetch: f });
    const s = await a.startSession({ scope: 'tickets:read cred:reports-s3' });
    assert.equal((await a.credentials('reports-s3')).credentials.AccessKeyId, 'ASIACACHED');
    await revokeSession(t.b, s.sid, { actor: 'test', via: 'test' });
    t.clock.advance(8 * MIN); // the token's refresh time: the renewal is refused, the session has ended
    await rejectsWith(a.token(), 'session_ended');
    await rejectsWith(a.credentials('reports-s3'), 'session_ended'); // the cached copy is still "fresh" for another minute
    await a.close();
  });

  it('delegates an attenuated token to a sub-agent, who uses it as a handed-over token until it expires', async () => {
    const a = agentFor(orch);
    await a.startSession({ scope: 'tickets:read tickets:write', audience: AUD });
    const d = await a.delegate({ to: worker.id, scope: 'tickets:read', audience: AUD });
    const c = decodeJwt(d.accessToken) as Record<string, unknown>;
    assert.equal(c.client_id, worker.id);
    assert.deepEqual(c.act, { sub: worker.id, act: { sub: orch.id } });
    assert.equal(c.scope, 'tickets:read');
    assert.equal(c.cordon_depth, 1);
    assert.deepEqual(d.scope, ['tickets:read']);
    await rejectsWith(a.delegate({ to: worker.id, scope: 'tickets:write' }), 'oauth', /invalid_scope/);

    const sub = new CordonAgent({ issuer: t.url, accessToken: d.accessToken, clock: t.clock });
    assert.equal(await sub.token(), d.accessToken);
    assert.equal(sub.session!.sid, c.sid);
    t.clock.advance(6 * MIN); // worker token_ttl is 5m
    await rejectsWith(sub.token(), 'session_ended', /ask the orchestrator/);
    await a.close();
  });

  it('binds tokens to a DPoP key when it has one, refreshes with proofs, and signs proofs for resource servers', async () => {
    const a = agentFor(bound, { dpop: true });
    await assert.rejects(
      agentFor(bound).startSession({ scope: 'tickets:read' }),
      (e: CordonSdkError) => e.code === 'oauth' && e.error === 'invalid_request' && /DPoP/.test(e.message),
    );
    const s = await a.startSession({ scope: 'tickets:read', audience: AUD });
    assert.equal(s.tokenType, 'DPoP');
    const jkt = await a.dpopJkt();
    const tok = await a.token();
    assert.equal((decodeJwt(tok).cnf as { jkt: string }).jkt, jkt);
    t.clock.advance(9 * MIN);
    const tok2 = await a.token();
    assert.notEqual(tok2, tok);
    assert.equal((decodeJwt(tok2).cnf as { jkt: string }).jkt, jkt);
    const h = await a.authorizationHeaders('GET', 'https://tickets.example/tickets/1?x=1');
    assert.match(h.authorization, /^DPoP /);
    const proof = decodeJwt(h.dpop);
    assert.equal(proof.htu, 'https://tickets.example/tickets/1');
    assert.equal(proof.htm, 'GET');
    assert.equal(typeof proof.ath, 'string');
    await a.close();
    assert.equal((await introspect(t.b, tok2)).active, false);
  });

  it('a DPoP-bound orchestrator delegates only DPoP-bound tokens, bound to the sub-agent key it names (its own proof only shows it holds the subject token)', async () => {
    const a = agentFor(orch, { dpop: true });
    const s = await a.startSession({ scope: 'tickets:read', audience: AUD });
    assert.equal(s.tokenType, 'DPoP');
    // A bound parent never yields a bearer child.
    await assert.rejects(
      a.delegate({ to: worker.id, scope: 'tickets:read', audience: AUD }),
      (e: CordonSdkError) => e.code === 'oauth' && e.error === 'invalid_request' && /DPoP-bound/.test(e.message),
    );
    // Bound to the worker's key, and then it must come back DPoP-bound.
    const workerKey = await DpopKey.generate();
    const bound2 = await a.delegate({ to: worker.id, scope: 'tickets:read', audience: AUD, dpopJkt: workerKey.jkt });
    assert.equal(bound2.tokenType, 'DPoP');
    assert.equal((decodeJwt(bound2.accessToken).cnf as { jkt: string }).jkt, workerKey.jkt);
    await a.close();
  });

  it('a delegated token the SDK refuses after the broker issued it (not bound as asked) is revoked, not left alive', async () => {
    let issued: string | null = null;
    const f: FetchLike = async (u, init) => {
      const r = await fetch(u, init);
      if (!u.endsWith('/token') || !String(init?.body).includes('requested_actor')) return r;
      const body = (await r.json()) as Record<string, unknown>;
      issued = body.access_token as string;
      return Response.json({ ...body, token_type: 'Bearer' }); // as if a proxy or an old broker dropped the binding
    };
    const a = agentFor(orch, { fetch: f });
    await a.startSession({ scope: 'tickets:read', audience: AUD });
    const workerKey = await DpopKey.generate();
    await rejectsWith(a.delegate({ to: worker.id, scope: 'tickets:read', audience: AUD, dpopJkt: workerKey.jkt }), 'bad_response', /DPoP-bound.*revoked/);
    assert.ok(issued);
    assert.equal((await introspect(t.b, issued)).active, false, 'the token the broker issued is revoked');
    await a.close();
  });

  it('authenticates with private_key_jwt (JWK or PEM), for session start and revocation', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const pub = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    const r = await registerAgent(t.b, { name: 'pkjwt', policy: 'example-worker', auth: 'private_key_jwt', jwks: { keys: [pub] } });
    const dir = mkdtempSync(join(tmpdir(), 'cordon-sdk-'));
    try {
      const file = join(dir, 'key.jwk.json');
      writeFileSync(file, JSON.stringify({ ...(await exportJWK(privateKey)), kid: 'k1' }), { mode: 0o600 });
      const a = CordonAgent.fromEnv({ CORDON_ISSUER: t.url, CORDON_CLIENT_ID: r.agent.id, CORDON_PRIVATE_KEY_FILE: file }, { clock: t.clock });
      assert.equal(a.mode, 'private_key_jwt');
      await a.startSession({ scope: 'tickets:read' });
      const tok = await a.token();
      assert.equal(decodeJwt(tok).client_id, r.agent.id);
      await a.close();
      assert.equal((await introspect(t.b, tok)).active, false, 'revoked through a client assertion');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses scopes and audiences the policy does not hold with typed oauth errors', async () => {
    const a = agentFor(worker);
    const e = await rejectsWith(a.startSession({ scope: 'tickets:write' }), 'oauth');
    assert.equal(e.error, 'invalid_scope');
    assert.equal(e.status, 400);
    const e2 = await rejectsWith(a.startSession({ scope: 'tickets:read', audience: 'https://elsewhere.example' }), 'oauth');
    assert.equal(e2.error, 'invalid_target');
    await rejectsWith(a.token(), 'no_session');
    const wrong = new CordonAgent({ issuer: t.url, clientId: worker.id, clientSecret: 'nope' });
    const e3 = await rejectsWith(wrong.startSession({ scope: 'tickets:read' }), 'oauth');
    assert.equal(e3.error, 'invalid_client');
  });

  it('caches backend credentials until shortly before they expire and turns aws-sts ones into AWS SDK identities', async () => {
    let calls = 0;
    const f: FetchLike = async (u, init) => {
      if (u.includes('/credentials/')) {
        calls++;
        assert.match(new Headers(init?.headers).get('authorization') ?? '', /^Bearer ey/);
        const exp = new Date(t.clock.now() + 10 * MIN).toISOString();
        return Response.json({
          name: 'reports-s3',
          provider: 'aws-sts',
          expires_at: exp,
          credentials: { AccessKeyId: `ASIA${calls}`, SecretAccessKey: 's', SessionToken: 'st', Expiration: exp },
        });
      }
      return fetch(u, init);
    };
    const a = agentFor(orch, { fetch: f });
    await a.startSession({ scope: 'tickets:read cred:reports-s3' });
    const provider = a.awsCredentials('reports-s3');
    const [x, y] = await Promise.all([provider(), provider()]);
    assert.equal(calls, 1, 'one request for concurrent callers');
    assert.equal(x.accessKeyId, 'ASIA1');
    assert.deepEqual(x, y);
    assert.ok(x.expiration instanceof Date);
    t.clock.advance(8 * MIN);
    assert.equal((await provider()).accessKeyId, 'ASIA1', 'cached while more than the margin remains');
    t.clock.advance(MIN + 30_000);
    assert.equal((await provider()).accessKeyId, 'ASIA2', 're-fetched within the last minute');
    await rejectsWith(a.credentials('../etc'), 'config', /malformed/);
    assert.throws(
      () => toAwsIdentity({ name: 'v', provider: 'vault', expiresAt: new Date(), credentials: {} }),
      (e: CordonSdkError) => e.code === 'unsupported',
    );
    await a.close();
  });

  describe('garbage from the network fails closed with typed errors', () => {
    let srv: ReturnType<typeof createServer>;
    let url: string;
    let answer: (res: import('node:http').ServerResponse) => void = () => {};
    before(async () => {
      srv = createServer((_req, res) => answer(res));
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((r) => srv.close(() => r())));
    const start = () => new CordonAgent({ issuer: url, clientId: 'agt_x', clientSecret: 's', timeoutMs: 500 }).startSession({ scope: 'a' });

    it('an HTML error page from a proxy', async () => {
      answer = (res) => {
        res.writeHead(502, { 'content-type': 'text/html' });
        res.end('<html><body><h1>502 Bad Gateway</h1></body></html>');
      };
      const e = await rejectsWith(start(), 'bad_response', /status 502 with text\/html.*502 Bad Gateway/);
      assert.equal(e.status, 502);
    });
    it('an HTML page with status 200', async () => {
      answer = (res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<!doctype html><title>Login</title>');
      };
      await rejectsWith(start(), 'bad_response', /expected JSON, got text\/html/);
    });
    it('truncated JSON', async () => {
      answer = (res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"access_token":"eyJhbGciOi');
      };
      await rejectsWith(start(), 'bad_response', /truncated or malformed JSON/);
    });
    it('JSON that is not a token response', async () => {
      answer = (res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: 'not a jwt', token_type: 'Bearer', expires_in: 60 }));
      };
      await rejectsWith(start(), 'bad_response', /no access_token JWT/);
      answer = (res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ access_token: 'a.b.c', token_type: 'Bearer', expires_in: -5, sid: 's' }));
      };
      await rejectsWith(start(), 'bad_response', /expires_in/);
    });
    it('a connection reset mid-answer and a broker that never answers', async () => {
      answer = (res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '500' });
        res.write('{"access_token":', () => res.socket?.destroy()); // reset once the first bytes are out
      };
      await rejectsWith(start(), 'network');
      answer = () => {};
      await rejectsWith(start(), 'network', /no answer within 500 ms/);
    });
    it('a closed port', async () => {
      const a = new CordonAgent({ issuer: 'http://127.0.0.1:9', clientId: 'agt_x', clientSecret: 's', timeoutMs: 2000 });
      await rejectsWith(a.startSession({ scope: 'a' }), 'network', /could not reach/);
    });
  });

  it('fromEnv reports missing configuration by variable', () => {
    assert.throws(
      () => CordonAgent.fromEnv({}),
      (e: CordonSdkError) => e.code === 'config' && /CORDON_ISSUER/.test(e.message),
    );
    assert.throws(
      () => CordonAgent.fromEnv({ CORDON_ISSUER: 'http://x' }),
      (e: CordonSdkError) => e.code === 'config' && /CORDON_CLIENT_SECRET/.test(e.message),
    );
    assert.throws(
      () => CordonAgent.fromEnv({ CORDON_ISSUER: 'http://x', CORDON_CLIENT_SECRET: 's' }),
      (e: CordonSdkError) => e.code === 'config' && /CORDON_CLIENT_ID/.test(e.message),
    );
    assert.throws(
      () => CordonAgent.fromEnv({ CORDON_ISSUER: 'http://x', CORDON_CLIENT_ID: 'a', CORDON_PRIVATE_KEY_FILE: '/nonexistent/key' }),
      (e: CordonSdkError) => e.code === 'config' && /ENOENT/.test(e.message),
    );
    assert.equal(CordonAgent.fromEnv({ CORDON_ISSUER: 'http://x', CORDON_BOOTSTRAP_TOKEN: 'cbt_x' }).mode, 'bootstrap');
    assert.equal(
      CordonAgent.fromEnv({
        CORDON_ISSUER: 'http://x',
        CORDON_TOKEN_URI: 'http://127.0.0.1:1/token',
        CORDON_TOKEN_AUTHORIZATION: 'x',
        CORDON_CLIENT_SECRET: 's',
      }).mode,
      'local',
    );
  });
});
