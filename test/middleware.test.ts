import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import express from 'express';
import { SignJWT, decodeJwt, decodeProtectedHeader, generateKeyPair } from 'jose';
import { randomBytes } from 'node:crypto';
import { AgentTokenError, CordonAgent, DpopKey, athOf, requireAgentToken, type AgentTokenMiddleware, type RequireAgentTokenOptions } from '../src/index.ts';
import { revokeSession, revokeTokenChain, revokeAgent } from '../src/revocation/revoke.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';

const AUD = 'https://tickets.example';

interface Rs {
  url: string;
  mw: AgentTokenMiddleware;
  close(): Promise<void>;
}

async function resourceServer(opts: RequireAgentTokenOptions): Promise<Rs> {
  const mw = requireAgentToken(opts);
  const app = express();
  app.get('/tickets/:id', mw, (req, res) => {
    res.json({ id: req.params.id, agent: { ...req.agent, claims: undefined } });
  });
  const server: Server = await new Promise((r) => {
    const s = app.listen(0, '127.0.0.1', () => r(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    mw,
    close: () =>
      new Promise<void>((r) => {
        mw.close();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any; www: string | null }> {
  const r = await fetch(url, { headers });
  const text = await r.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* empty */
  }
  return { status: r.status, body, www: r.headers.get('www-authenticate') };
}

describe('middleware: requireAgentToken in front of an express resource server', () => {
  let t: TestBroker;
  let orch: { id: string; secret: string };
  let worker: { id: string; secret: string };
  let bound: { id: string; secret: string };
  let rs: Rs;
  const POLL = 100;

  before(async () => {
    t = await startTestBroker({ policyDir: resolve('examples/policies') });
    orch = await t.register('orch', 'example-orchestrator');
    worker = await t.register('worker', 'example-worker');
    bound = await t.register('bound', 'example-bound');
    rs = await resourceServer({ issuer: t.url, audience: AUD, scopes: ['tickets:read'], pollIntervalMs: POLL, clock: t.clock });
    await rs.mw.ready();
  });
  after(async () => {
    await rs?.close();
    await t?.close();
  });
  // Tests move the shared clock, and the feed's freshness is measured on it: start each with a read at the current time.
  beforeEach(() => rs?.mw.pollNow());

  const session = async (who: { id: string; secret: string }, scope: string, audience: string | null = AUD, extra = {}) => {
    const a = new CordonAgent({ issuer: t.url, clientId: who.id, clientSecret: who.secret, clock: t.clock, ...extra });
    await a.startSession({ scope, audience: audience ?? undefined });
    return a;
  };

  it('accepts a good token and exposes the caller on req.agent', async () => {
    const a = await session(orch, 'tickets:read tickets:write');
    const tok = await a.token();
    const r = await get(`${rs.url}/tickets/7`, { authorization: `Bearer ${tok}` });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const ag = r.body.agent;
    assert.equal(ag.client_id, orch.id);
    assert.equal(ag.sub, orch.id);
    assert.equal(ag.sid, a.session!.sid);
    assert.deepEqual(ag.scope, ['tickets:read', 'tickets:write']);
    assert.deepEqual(ag.chain, [orch.id]);
    assert.equal(ag.depth, 0);
    assert.equal(ag.jti, decodeJwt(tok).jti);
    await a.close();
  });

  it('exposes the act chain of a delegated token', async () => {
    const a = await session(orch, 'tickets:read');
    const d = await a.delegate({ to: worker.id, scope: 'tickets:read', audience: AUD });
    const r = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${d.accessToken}` });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.agent.client_id, worker.id);
    assert.equal(r.body.agent.sub, orch.id);
    assert.deepEqual(r.body.agent.chain, [orch.id, worker.id]);
    assert.deepEqual(r.body.agent.act, { sub: worker.id, act: { sub: orch.id } });
    assert.equal(r.body.agent.depth, 1);
    await a.close();
  });

  it('answers 401 with both challenges and no error code when there is no token (RFC 6750 §3.1)', async () => {
    const r = await get(`${rs.url}/tickets/1`);
    assert.equal(r.status, 401);
    assert.match(r.www!, /^Bearer realm="https:\/\/tickets\.example", DPoP algs="/);
    assert.doesNotMatch(r.www!, /error=/);
    const r2 = await get(`${rs.url}/tickets/1`, { authorization: 'Basic Zm9vOmJhcg==' });
    assert.equal(r2.status, 400);
    assert.equal(r2.body.error, 'invalid_request');
  });

  it('refuses a token for another audience', async () => {
    const a = await session(orch, 'tickets:read', null); // aud = the broker itself
    const r = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${await a.token()}` });
    assert.equal(r.status, 401);
    assert.equal(r.body.error, 'invalid_token');
    assert.match(r.body.error_description, /aud/);
    assert.match(r.www!, /^Bearer realm="[^"]+", error="invalid_token", error_description="[^"]*aud/);
    await a.close();
  });

  it('refuses a token without the required scope with 403 insufficient_scope', async () => {
    const a = await session(orch, 'tickets:write');
    const r = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${await a.token()}` });
    assert.equal(r.status, 403);
    assert.equal(r.body.error, 'insufficient_scope');
    assert.match(r.www!, /error="insufficient_scope".*scope="tickets:read"/);
    await a.close();
  });

  it('refuses an expired token on its clock', async () => {
    const a = await session(worker, 'tickets:read');
    const tok = await a.token();
    t.clock.advance(6 * 60_000); // worker token_ttl 5m, tolerance 10 s
    const r = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${tok}` });
    assert.equal(r.status, 401);
    assert.match(r.body.error_description, /expired/);
  });

  it('refuses a revoked token within one poll interval of the revocation (jti, session and agent)', async () => {
    // Waits for the middleware's own timer to read the feed once after the revocation (no pollNow()).
    const waitRefused = async (tok: string): Promise<number> => {
      const t0 = Date.now();
      await rs.mw.nextPoll();
      const ms = Date.now() - t0;
      const r = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${tok}` });
      assert.equal(r.status, 401, 'refused after the first scheduled read of the feed');
      assert.equal(r.body.error, 'invalid_token');
      assert.match(r.body.error_description, /revoked/);
      return ms;
    };
    const a = await session(orch, 'tickets:read');
    const tok = await a.token();
    assert.equal((await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${tok}` })).status, 200);
    await revokeTokenChain(t.b, decodeJwt(tok).jti!, { actor: 'test', via: 'test' });
    const ms = await waitRefused(tok);
    assert.ok(ms <= 2 * POLL + 200, `refused after ${ms} ms`);
    assert.ok(rs.mw.revocations.jtis.has(decodeJwt(tok).jti!));

    const b2 = await session(orch, 'tickets:read');
    const d = await b2.delegate({ to: worker.id, scope: 'tickets:read', audience: AUD });
    assert.equal((await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${d.accessToken}` })).status, 200);
    await revokeSession(t.b, b2.session!.sid, { actor: 'test', via: 'test' });
    await waitRefused(d.accessToken);

    const w2 = await t.register('worker-doomed', 'example-worker');
    const c = await session(w2, 'tickets:read');
    const ct = await c.token();
    assert.equal((await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${ct}` })).status, 200);
    await revokeAgent(t.b, w2.id, { actor: 'test', via: 'test' });
    await waitRefused(ct);
    assert.ok(rs.mw.revocations.agents.has(w2.id));
  });

  it('a revoked token stays refused just past its exp, while the clock tolerance would still accept it; forgotten after', async () => {
    const mw = requireAgentToken({ issuer: t.url, audience: AUD, pollIntervalMs: 60_000, clock: t.clock }); // tolerance: the default 10 s
    try {
      await mw.ready();
      const a = await session(orch, 'tickets:read');
      const tok = await a.token();
      const { jti, exp } = decodeJwt(tok) as { jti: string; exp: number };
      const req = { authorization: `Bearer ${tok}`, method: 'GET', url: 'http://rs.example/tickets/1' };
      await revokeTokenChain(t.b, jti, { actor: 'test', via: 'test' });
      await mw.pollNow();
      await assert.rejects(mw.verify(req), (e: AgentTokenError) => e.reason === 'revoked');
      t.clock.set(exp * 1000 + 3000); // past exp, within the tolerance: the signature check still passes
      await mw.pollNow();
      await assert.rejects(mw.verify(req), (e: AgentTokenError) => e.reason === 'revoked', 'still known as revoked');
      t.clock.set(exp * 1000 + 11_000);
      await mw.pollNow();
      await assert.rejects(mw.verify(req), (e: AgentTokenError) => e.reason === 'expired');
      assert.equal(mw.revocations.jtis.has(jti), false, 'forgotten once exp + tolerance has passed');
    } finally {
      mw.close();
    }
  });

  it('a DPoP proof whose htu is not a URL is refused, even when the request URL does not parse either', async () => {
    const pair = await generateKeyPair('ES256');
    const key = await DpopKey.fromKeyPair(pair, 'ES256');
    const a = await session(bound, 'tickets:read', AUD, { dpop: key });
    const tok = await a.token();
    const proof = (htu: string) =>
      new SignJWT({ htm: 'GET', htu, ath: athOf(tok) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk })
        .setIssuedAt(Math.floor(t.clock.now() / 1000))
        .setJti(randomBytes(16).toString('base64url'))
        .sign(pair.privateKey);
    await assert.rejects(
      rs.mw.verify({ authorization: `DPoP ${tok}`, dpop: await proof('not a url'), method: 'GET', url: 'not a url either' }),
      (e: AgentTokenError) => e.reason === 'dpop_mismatch',
    );
    // The same hand-made proof for a real URL passes: only the URL is at fault above.
    const ok = await rs.mw.verify({
      authorization: `DPoP ${tok}`,
      dpop: await proof('https://rs.example/tickets/1'),
      method: 'GET',
      url: 'https://rs.example/tickets/1?x=1',
    });
    assert.equal(ok.jkt, key.jkt);
    await a.close();
  });

  it('compares the DPoP htu after normalising both sides (RFC 9449 §4.3): host case and default port do not matter, the path does', async () => {
    const pair = await generateKeyPair('ES256');
    const key = await DpopKey.fromKeyPair(pair, 'ES256');
    const a = await session(bound, 'tickets:read', AUD, { dpop: key });
    const tok = await a.token();
    const proof = (htu: string) =>
      new SignJWT({ htm: 'GET', htu, ath: athOf(tok) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk })
        .setIssuedAt(Math.floor(t.clock.now() / 1000))
        .setJti(randomBytes(16).toString('base64url'))
        .sign(pair.privateKey);
    const use = async (htu: string, url = 'https://rs.example/tickets/1') =>
      rs.mw.verify({ authorization: `DPoP ${tok}`, dpop: await proof(htu), method: 'GET', url });
    assert.equal((await use('HTTPS://RS.Example:443/tickets/1')).jkt, key.jkt);
    assert.equal((await use('https://rs.example/tickets/1', 'https://RS.EXAMPLE:443/tickets/1?page=2')).jkt, key.jkt);
    assert.equal((await use('http://rs.example:80/tickets/1', 'http://rs.example/tickets/1')).jkt, key.jkt);
    await assert.rejects(use('https://rs.example/tickets/2'), (e: AgentTokenError) => e.reason === 'dpop_mismatch' && /htu/.test(e.message));
    await assert.rejects(use('https://rs.example:8443/tickets/1'), (e: AgentTokenError) => e.reason === 'dpop_mismatch');
    await assert.rejects(use('https://rs.example/Tickets/1'), (e: AgentTokenError) => e.reason === 'dpop_mismatch', 'the path is case-sensitive');
    await a.close();
  });

  it('DPoP-bound tokens need the DPoP scheme and a valid, fresh proof for this request', async () => {
    const key = await DpopKey.generate();
    const a = await session(bound, 'tickets:read', AUD, { dpop: key });
    const tok = await a.token();
    const url = `${rs.url}/tickets/9`;
    // As a bearer token, or without a proof: refused with a DPoP challenge.
    const asBearer = await get(url, { authorization: `Bearer ${tok}` });
    assert.equal(asBearer.status, 401);
    assert.match(asBearer.www!, /^DPoP algs="[^"]+", error="invalid_token"/);
    const noProof = await get(url, { authorization: `DPoP ${tok}` });
    assert.equal(noProof.status, 401);
    assert.equal(noProof.body.error, 'invalid_dpop_proof');
    assert.match(noProof.www!, /^DPoP .*error="invalid_dpop_proof"/);
    // A good proof passes, once.
    const h = await a.authorizationHeaders('GET', url);
    const ok = await get(url, h);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.agent.jkt, key.jkt);
    const replay = await get(url, h);
    assert.equal(replay.status, 401);
    assert.match(replay.body.error_description, /used before/);
    // A proof for another URL, method, token or key.
    assert.equal((await get(url, await a.authorizationHeaders('GET', `${rs.url}/tickets/10`))).status, 401);
    assert.equal((await get(url, await a.authorizationHeaders('POST', url))).status, 401);
    const other = await DpopKey.generate();
    const foreign = await get(url, { authorization: `DPoP ${tok}`, dpop: await other.proof('GET', url, { nowMs: t.clock.now(), accessToken: tok }) });
    assert.equal(foreign.status, 401);
    assert.match(foreign.body.error_description, /not the key the token is bound to/);
    const stale = await get(url, { authorization: `DPoP ${tok}`, dpop: await key.proof('GET', url, { nowMs: t.clock.now() - 5 * 60_000, accessToken: tok }) });
    assert.equal(stale.status, 401);
    // An unbound token sent with the DPoP scheme.
    const plain = await session(orch, 'tickets:read');
    const pt = await plain.token();
    const unbound = await get(url, { authorization: `DPoP ${pt}`, dpop: await key.proof('GET', url, { nowMs: t.clock.now(), accessToken: pt }) });
    assert.equal(unbound.status, 401);
    assert.match(unbound.body.error_description, /not DPoP-bound/);
    await a.close();
    await plain.close();
  });

  it('refuses forged tokens: alg none, HS256, a foreign signature under the broker kid, the wrong typ', async () => {
    const real = await (await session(orch, 'tickets:read')).token();
    const h = decodeProtectedHeader(real);
    const payload = decodeJwt(real);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${b64({ alg: 'none', typ: 'at+jwt', kid: h.kid })}.${b64(payload)}.`;
    const r1 = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${none}` });
    assert.equal(r1.status, 401);
    const hs = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: h.kid }).sign(new TextEncoder().encode('x'.repeat(32)));
    const r2 = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${hs}` });
    assert.equal(r2.status, 401);
    assert.match(r2.body.error_description, /algorithm/);
    const { privateKey } = await generateKeyPair(h.alg as string, { crv: h.alg === 'EdDSA' ? 'Ed25519' : undefined });
    const forged = await new SignJWT(payload).setProtectedHeader({ alg: h.alg as string, typ: 'at+jwt', kid: h.kid }).sign(privateKey);
    const r3 = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${forged}` });
    assert.equal(r3.status, 401);
    assert.match(r3.body.error_description, /signature/);
    const r4 = await get(`${rs.url}/tickets/1`, { authorization: 'Bearer not-a-jwt' });
    assert.equal(r4.status, 401);
    // Signed by the broker's own key, but not an access token (typ JWT): refused.
    const k = t.b.keys.active();
    const wrongTyp = await new SignJWT(payload).setProtectedHeader({ alg: k.alg, typ: 'JWT', kid: k.kid }).sign(k.privateKey);
    const r5 = await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${wrongTyp}` });
    assert.equal(r5.status, 401);
    assert.match(r5.body.error_description, /typ/);
    const rightTyp = await new SignJWT(payload).setProtectedHeader({ alg: k.alg, typ: 'at+jwt', kid: k.kid }).sign(k.privateKey);
    assert.equal(
      (await get(`${rs.url}/tickets/1`, { authorization: `Bearer ${rightTyp}` })).status,
      200,
      'the same claims with the right typ pass (the test forges nothing else)',
    );
  });

  describe('garbage from the network: the middleware fails closed', () => {
    let fake: Server;
    let fakeUrl: string;
    let jwks: (res: ServerResponse) => void;
    let feed: (res: ServerResponse) => void;
    let jwksHits = 0;
    let token: string;
    const json = (res: ServerResponse, body: unknown, status = 200) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    };
    const realJwks = async () => (await fetch(`${t.url}/jwks`)).json();
    const goodFeed = (res: ServerResponse) => json(res, { cursor: 0, more: false, revoked: [] });

    before(async () => {
      fake = createServer((req: IncomingMessage, res: ServerResponse) => {
        if (req.url?.startsWith('/jwks')) {
          jwksHits++;
          return jwks(res);
        }
        if (req.url?.startsWith('/revocations')) return feed(res);
        res.writeHead(404).end();
      });
      await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
      fakeUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
      token = await (await session(orch, 'tickets:read')).token();
    });
    after(() => new Promise<void>((r) => fake.close(() => r())));

    const withFake = async (fn: (rs2: Rs) => Promise<void>, opts: Partial<RequireAgentTokenOptions> = {}) => {
      jwksHits = 0;
      const rs2 = await resourceServer({
        issuer: t.url,
        audience: AUD,
        jwksUri: `${fakeUrl}/jwks`,
        revocationsUri: `${fakeUrl}/revocations`,
        pollIntervalMs: 50,
        clock: t.clock,
        timeoutMs: 500,
        ...opts,
      });
      try {
        await fn(rs2);
      } finally {
        await rs2.close();
      }
    };
    const call = (rs2: Rs, tok = token) => get(`${rs2.url}/tickets/1`, { authorization: `Bearer ${tok}` });

    it('a JWKS answered as an HTML error page', async () => {
      jwks = (res) => {
        res.writeHead(503, { 'content-type': 'text/html' });
        res.end('<html>Service Unavailable</html>');
      };
      feed = goodFeed;
      await withFake(async (rs2) => {
        const r = await call(rs2);
        assert.equal(r.status, 401);
        assert.match(r.body.error_description, /keys could not be read.*status 503 with text\/html/);
      });
    });

    it('a truncated JWKS', async () => {
      const full = JSON.stringify(await realJwks());
      jwks = (res) => json(res, full.slice(0, full.length - 7));
      feed = goodFeed;
      await withFake(async (rs2) => {
        const r = await call(rs2);
        assert.equal(r.status, 401);
        assert.match(r.body.error_description, /truncated or malformed JSON/);
      });
    });

    it('a JWKS that carries a symmetric key is refused whole', async () => {
      const good = (await realJwks()) as { keys: unknown[] };
      jwks = (res) => json(res, { keys: [...good.keys, { kty: 'oct', kid: 'hmac', k: 'c2VjcmV0', alg: 'HS256' }] });
      feed = goodFeed;
      await withFake(async (rs2) => {
        const r = await call(rs2);
        assert.equal(r.status, 401);
        assert.match(r.body.error_description, /symmetric key/);
      });
    });

    it('a JWKS that carries private key material is refused whole', async () => {
      const { privateKey } = await generateKeyPair('ES256', { extractable: true });
      const { exportJWK } = await import('jose');
      const good = (await realJwks()) as { keys: unknown[] };
      const leaked = { ...(await exportJWK(privateKey)), kid: 'leaked', alg: 'ES256' };
      jwks = (res) => json(res, { keys: [...good.keys, leaked] });
      feed = goodFeed;
      await withFake(async (rs2) => {
        const r = await call(rs2);
        assert.equal(r.status, 401);
        assert.match(r.body.error_description, /private key material/);
      });
    });

    it('a token whose kid is unknown: 401, and the JWKS is re-read at most once per cooldown', async () => {
      const { publicKey } = await generateKeyPair('ES256', { extractable: true });
      const { exportJWK } = await import('jose');
      const other = { ...(await exportJWK(publicKey)), kid: 'someone-else', alg: 'ES256' };
      jwks = (res) => json(res, { keys: [other] });
      feed = goodFeed;
      await withFake(
        async (rs2) => {
          for (let i = 0; i < 5; i++) {
            const r = await call(rs2);
            assert.equal(r.status, 401);
            assert.match(r.body.error_description, /not signed by a key the broker publishes/);
          }
          assert.ok(jwksHits <= 2, `JWKS fetched ${jwksHits} times for 5 unknown-kid requests`);
          // The cooldown runs on the injected clock: once it has passed, one more unknown kid re-reads the set once.
          const before = jwksHits;
          t.clock.advance(60_000);
          await rs2.mw.pollNow(); // the feed's freshness is measured on the same clock
          assert.equal((await call(rs2)).status, 401);
          assert.equal((await call(rs2)).status, 401);
          assert.equal(jwksHits, before + 1);
        },
        { jwksCooldownMs: 60_000 },
      );
    });

    it('a revocation feed that cannot be read: nothing is let through', async () => {
      const good = await realJwks();
      jwks = (res) => json(res, good);
      feed = (res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html>login</html>');
      };
      await withFake(async (rs2) => {
        const r = await call(rs2);
        assert.equal(r.status, 401);
        assert.match(r.body.error_description, /revocation feed could not be read/);
      });
      feed = (res) => json(res, { cursor: 'x', more: false, revoked: [] });
      await withFake(async (rs2) => {
        assert.equal((await call(rs2)).status, 401);
      });
    });

    it('a feed that went stale after working: refused once it is older than feedStaleAfterMs', async () => {
      const good = await realJwks();
      jwks = (res) => json(res, good);
      feed = goodFeed;
      await withFake(
        async (rs2) => {
          assert.equal((await call(rs2)).status, 200);
          feed = (res) => res.socket?.destroy();
          await rs2.mw.nextPoll(); // a read that fails
          assert.equal((await call(rs2)).status, 200, 'one failed read within feedStaleAfterMs changes nothing');
          t.clock.advance(201); // the last good read is now older than feedStaleAfterMs
          const r = await call(rs2);
          assert.equal(r.status, 401);
          assert.match(r.body.error_description, /revocation feed/);
        },
        { feedStaleAfterMs: 200 },
      );
    });

    it('a key the broker stops publishing: tokens it signed are refused even though they were verified (and cached) before', async () => {
      const good = (await realJwks()) as { keys: Array<{ kid: string }> };
      const { publicKey } = await generateKeyPair('ES256', { extractable: true });
      const { exportJWK } = await import('jose');
      const other = { ...(await exportJWK(publicKey)), kid: 'rotated-in', alg: 'ES256' };
      jwks = (res) => json(res, good);
      feed = goodFeed;
      await withFake(
        async (rs2) => {
          assert.equal((await call(rs2)).status, 200);
          assert.equal((await call(rs2)).status, 200, 'served from the verified-token cache');
          await rs2.mw.jwks.settled(); // background reloads of the old set are over
          jwks = (res) => json(res, { keys: [other] });
          await call(rs2); // triggers the background reload (max age 0)
          await rs2.mw.jwks.settled();
          const r = await call(rs2);
          assert.equal(r.status, 401);
          assert.match(r.body.error_description, /not signed by a key the broker publishes/);
        },
        { jwksMaxAgeMs: 0, jwksCooldownMs: 0 },
      );
    });

    it('an unreachable broker at start', async () => {
      await withFake(
        async (rs2) => {
          const r = await call(rs2);
          assert.equal(r.status, 401);
        },
        { jwksUri: 'http://127.0.0.1:9/jwks', revocationsUri: 'http://127.0.0.1:9/revocations' },
      );
    });
  });

  it('refuses configurations that would accept symmetric algorithms', () => {
    assert.throws(() => requireAgentToken({ issuer: t.url, audience: AUD, algorithms: ['HS256'] }), /asymmetric only/);
    assert.throws(() => requireAgentToken({ issuer: t.url, audience: [] }), /audience/);
  });
});
