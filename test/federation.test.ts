import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { setAgentEnabled } from '../src/agents/registry.ts';
import {
  GRANT_TE,
  TT_ACCESS,
  TT_JWT,
  auditHead,
  auditSince,
  claimsOf,
  countTokens,
  delegateReq,
  denialsSince,
  introspect,
  policyDir,
  register,
  token,
  type Agent,
  type Res,
} from './delegation.kit.ts';

interface IssuerKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function issuerKey(kid: string, alg: 'ES256' | 'RS256' | 'EdDSA' = 'ES256'): Promise<IssuerKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

/** A tiny external issuer: it serves its JWKS over HTTP and signs whatever the test asks for. */
class TestIssuer {
  server!: Server;
  url = '';
  keys: IssuerKey[] = [];
  fetches = 0;
  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      if (req.url === '/jwks') {
        this.fetches++;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ keys: this.keys.map((k) => k.publicJwk) }));
        return;
      }
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }
  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

const MAIN_SUB = 'system:serviceaccount:research:planner';

describe('workload identity federation', function () {
  let idp: TestIssuer;
  let other: TestIssuer; // a second issuer nobody trusts
  let k1: IssuerKey;
  let fileKey: IssuerKey;
  let tb: TestBroker;
  let planner: Agent;
  let shared1: Agent;
  let shared2: Agent;
  let filed: Agent;
  let once: Agent;
  let rs: Agent;
  let unreachableIss: string;

  before(async () => {
    idp = await new TestIssuer().start();
    other = await new TestIssuer().start();
    k1 = await issuerKey('k1');
    idp.keys = [k1, await issuerKey('k2', 'RS256')];
    other.keys = [await issuerKey('k1')];
    fileKey = await issuerKey('file-1', 'EdDSA');
    const keyDir = mkdtempSync(join(tmpdir(), 'cordon-fedkeys-'));
    const jwksFile = join(keyDir, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify({ keys: [fileKey.publicJwk] }));
    unreachableIss = 'https://ci.unreachable.example';
    const dir = policyDir({
      'fed-planner.yaml': `name: fed-planner
token_ttl: 10m
session_ttl: 1h
scopes: [docs:read, web:search, tickets:read]
delegation: { max_depth: 1, scopes: [docs:read] }
federation:
  - { issuer: "${idp.url}", jwks_uri: "${idp.url}/jwks", audience: cordon-test, claim: sub, match: "${MAIN_SUB}" }
`,
      'fed-shared.yaml': `name: fed-shared
scopes: [docs:read]
federation:
  - { issuer: "${idp.url}", jwks_uri: "${idp.url}/jwks", audience: cordon-test, claim: repository, match: acme/shared }
`,
      'fed-once.yaml': `name: fed-once
scopes: [docs:read]
federation:
  - { issuer: "${idp.url}", jwks_uri: "${idp.url}/jwks", audience: cordon-test, claim: sub, match: "user:alice", single_use: true }
`,
      'fed-file.yaml': `name: fed-file
scopes: [web:search]
federation:
  - { issuer: https://k8s.example/cluster-1, jwks_file: ${jwksFile}, audience: cordon, claim: sub, match: "system:serviceaccount:ci:runner" }
`,
      'fed-down.yaml': `name: fed-down
scopes: [web:search]
federation:
  - { issuer: "${unreachableIss}", jwks_uri: "http://127.0.0.1:1/jwks", audience: cordon, claim: sub, match: x }
`,
    });
    tb = await startTestBroker({ policyDir: dir });
    planner = await register(tb, 'fed-planner-1', 'fed-planner');
    shared1 = await register(tb, 'fed-shared-a', 'fed-shared');
    shared2 = await register(tb, 'fed-shared-b', 'fed-shared');
    filed = await register(tb, 'fed-file-1', 'fed-file');
    once = await register(tb, 'fed-once-1', 'fed-once');
    await register(tb, 'fed-down-1', 'fed-down');
    rs = await register(tb, 'fed-reader', 'doc-reader');
  });
  after(async () => {
    await tb.close();
    await idp.stop();
    await other.stop();
  });

  const nowSec = () => Math.floor(tb.clock.now() / 1000);

  /** A JWT from the test issuer; claims default to a fresh, valid token for the planner's rule. */
  function jwt(claims: JWTPayload = {}, opts: { key?: IssuerKey; iss?: string; header?: Record<string, unknown> } = {}): Promise<string> {
    const key = opts.key ?? k1;
    const iat = nowSec();
    return new SignJWT({ iss: opts.iss ?? idp.url, sub: MAIN_SUB, aud: 'cordon-test', iat, exp: iat + 600, jti: `ext-${Math.random()}`, ...claims })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...opts.header })
      .sign(key.privateKey);
  }

  const exchange = (subject: string, extra: Record<string, string> = {}, as: Agent | null = null): Promise<Res> =>
    token(tb, as, { grant_type: GRANT_TE, subject_token: subject, subject_token_type: TT_JWT, scope: 'docs:read', ...extra });

  /** A refusal: the status and error, a description matching `why`, one deny row, no token issued; then the broker still serves. */
  async function refused(p: Promise<Res> | (() => Promise<Res>), error: string, why: RegExp, status = 400): Promise<void> {
    const seq = await auditHead(tb.b);
    const before = await countTokens(tb.b);
    const r = await (typeof p === 'function' ? p() : p);
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.error, error, JSON.stringify(r.body));
    assert.match(r.body.error_description, why);
    assert.equal(await countTokens(tb.b), before, 'nothing issued');
    const d = await denialsSince(tb.b, seq);
    assert.equal(d.length, 1, JSON.stringify(d));
    assert.equal(d[0].event, 'deny');
    assert.equal(d[0].params.origin, 'federation');
    const ok = await exchange(await jwt());
    assert.equal(ok.status, 200, 'the broker keeps serving');
  }

  it('opens a session for the mapped agent through the public workload client, sub = <issuer>#<sub>', async () => {
    const seq = await auditHead(tb.b);
    const r = await exchange(await jwt(), { task: 'build-42', scope: 'docs:read web:search' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.issued_token_type, TT_ACCESS);
    const c = claimsOf(r.body.access_token);
    assert.equal(c.sub, `${idp.url}#${MAIN_SUB}`);
    assert.equal(c.client_id, planner.id);
    assert.equal(c.task, 'build-42');
    assert.equal(c.cordon_depth, 0);
    assert.equal(c.act, undefined);
    const s = await tb.b.db('sessions').where({ sid: c.sid }).first();
    assert.equal(s.origin, 'federation');
    assert.equal(s.subject, `${idp.url}#${MAIN_SUB}`);
    const open = (await auditSince(tb.b, seq)).find((a) => a.event === 'session.open')!;
    assert.equal(open.params.external_issuer, idp.url);
    assert.equal(open.params.external_sub, MAIN_SUB);
    assert.match(open.params.external_jti, /^ext-/);
    const i = await introspect(tb, rs, r.body.access_token);
    assert.equal(i.active, true);
    assert.equal(i.sub, `${idp.url}#${MAIN_SUB}`);
  });

  it('the external principal stays the subject down the delegation chain', async () => {
    const r = await exchange(await jwt(), { scope: 'docs:read' });
    const d = await delegateReq(tb, planner, r.body.access_token, rs.id, 'docs:read');
    assert.equal(d.status, 200, JSON.stringify(d.body));
    const c = claimsOf(d.body.access_token);
    assert.equal(c.sub, `${idp.url}#${MAIN_SUB}`);
    assert.deepEqual(c.act, { sub: rs.id, act: { sub: planner.id } });
  });

  it('an authenticated agent may exchange a JWT that maps to itself, not one that maps to another agent', async () => {
    assert.equal((await exchange(await jwt(), {}, planner)).status, 200);
    await refused(exchange(await jwt(), {}, filed), 'invalid_grant', /does not map to the calling agent/);
  });

  it('refuses a wrong audience', async () => {
    await refused(exchange(await jwt({ aud: 'someone-else' })), 'invalid_grant', /audience/);
    await refused(exchange(await jwt({ aud: undefined })), 'invalid_grant', /audience/);
  });

  it('refuses an expired token, a not-yet-valid one, one older than an hour, one without exp', async () => {
    const t = nowSec();
    await refused(exchange(await jwt({ iat: t - 700, exp: t - 100 })), 'invalid_grant', /expired/);
    await refused(exchange(await jwt({ nbf: t + 600 })), 'invalid_grant', /not yet valid/);
    await refused(exchange(await jwt({ iat: t - 2 * 3600, exp: t + 3600 })), 'invalid_grant', /too old/);
    await refused(exchange(await jwt({ exp: undefined })), 'invalid_grant', /exp/);
    await refused(exchange(await jwt({ iat: t + 3600, exp: t + 7200 })), 'invalid_grant', /iat|future/);
  });

  it('checks time on the broker clock, not the wall clock', async () => {
    const t = await jwt();
    tb.clock.advance(601_000 + tb.b.config.clockSkewSec * 1000);
    try {
      await refused(exchange(t), 'invalid_grant', /expired/);
    } finally {
      tb.clock.advance(-(601_000 + tb.b.config.clockSkewSec * 1000));
    }
  });

  it('refuses an unknown issuer, and a token signed by the right issuer name with a key it does not publish', async () => {
    await refused(exchange(await jwt({}, { iss: other.url, key: other.keys[0] })), 'invalid_grant', /not trusted/);
    // Same kid as the real key, another key: the signature does not verify.
    await refused(exchange(await jwt({}, { key: other.keys[0] })), 'invalid_grant', /signature/);
    const stranger = await issuerKey('k-unknown');
    await refused(exchange(await jwt({}, { key: stranger })), 'invalid_grant', /no key/);
  });

  it('refuses an unmapped subject', async () => {
    await refused(exchange(await jwt({ sub: 'system:serviceaccount:research:intruder' })), 'invalid_grant', /not mapped/);
    await refused(exchange(await jwt({ sub: undefined })), 'invalid_grant', /sub/);
  });

  it('refuses symmetric and unsigned tokens, foreign typ, and garbage', async () => {
    const hs = await new SignJWT({ iss: idp.url, sub: MAIN_SUB, aud: 'cordon-test', exp: nowSec() + 60, iat: nowSec() })
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode('a shared secret of at least 32 bytes!!'));
    await refused(exchange(hs), 'invalid_grant', /algorithm/);
    const none = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: idp.url, sub: MAIN_SUB, aud: 'cordon-test' })).toString('base64url')}.`;
    await refused(exchange(none), 'invalid_grant', /JWT|algorithm/);
    await refused(exchange(await jwt({}, { header: { typ: 'dpop+jwt' } })), 'invalid_grant', /typ/);
    await refused(exchange('not.a.jwt'), 'invalid_grant', /JWT/);
    await refused(exchange('x'.repeat(20_000)), 'invalid_grant', /JWT/);
  });

  it("refuses one of the broker's own access tokens sent as a federated JWT", async () => {
    const r = await exchange(await jwt());
    await refused(exchange(r.body.access_token), 'invalid_grant', /own tokens/);
  });

  it('needs requested_actor when several agents share the policy, and only accepts those agents', async () => {
    const shared = () => jwt({ sub: 'repo:acme/shared:ref:main', repository: 'acme/shared' });
    await refused(async () => exchange(await shared()), 'invalid_request', /requested_actor/);
    const r = await exchange(await shared(), { requested_actor: shared2.name });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(claimsOf(r.body.access_token).client_id, shared2.id);
    await refused(async () => exchange(await shared(), { requested_actor: planner.id }), 'invalid_grant', /not an active agent this identity maps to/);
    await refused(async () => exchange(await shared(), { requested_actor: 'no-such-agent' }), 'invalid_grant', /not an active agent/);
    // With one of the two disabled, the other is the only candidate.
    await setAgentEnabled(tb.b, shared2.id, false);
    try {
      const solo = await exchange(await shared());
      assert.equal(solo.status, 200);
      assert.equal(claimsOf(solo.body.access_token).client_id, shared1.id);
      await refused(async () => exchange(await shared(), { requested_actor: shared2.id }), 'invalid_grant', /not an active agent/);
    } finally {
      await setAgentEnabled(tb.b, shared2.id, true);
    }
  });

  it('a single_use rule: each JWT (by jti) opens one session, also when two uses race; a JWT without jti is refused; other rules allow reuse', async () => {
    const alice = await jwt({ sub: 'user:alice' });
    const first = await exchange(alice);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(claimsOf(first.body.access_token).client_id, once.id);
    await refused(() => exchange(alice), 'invalid_grant', /has been used before \(its rule is single_use\)/);
    const racing = await jwt({ sub: 'user:alice' });
    const seq = await auditHead(tb.b);
    const both = await Promise.all([exchange(racing), exchange(racing), exchange(racing)]);
    assert.deepEqual(both.map((r) => r.status).sort(), [200, 400, 400], JSON.stringify(both.map((r) => r.body)));
    const d = await denialsSince(tb.b, seq);
    assert.equal(d.length, 2, 'each losing use audited once');
    assert.ok(d.every((x) => /used before/.test(x.reason ?? '')));
    // At the very end of its life (exp + the tolerated skew), a JWT claims nothing and opens nothing.
    const lastMoment = await jwt({ sub: 'user:alice', exp: nowSec() + 60 });
    tb.clock.advance((60 + tb.b.config.clockSkewSec) * 1000);
    await refused(() => exchange(lastMoment), 'invalid_grant', /expired/);
    tb.clock.advance(-(60 + tb.b.config.clockSkewSec) * 1000);
    await refused(async () => exchange(await jwt({ sub: 'user:alice', jti: undefined })), 'invalid_grant', /no usable jti, which a single_use rule needs/);
    const workload = await jwt();
    assert.equal((await exchange(workload)).status, 200);
    assert.equal((await exchange(workload)).status, 200, 'a rule without single_use lets a workload token open several sessions within its exp');
  });

  it('verifies against a local JWKS file', async () => {
    const iat = nowSec();
    const t = await new SignJWT({ iss: 'https://k8s.example/cluster-1', sub: 'system:serviceaccount:ci:runner', aud: ['cordon', 'other'], iat, exp: iat + 300 })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'file-1' })
      .sign(fileKey.privateKey);
    const r = await exchange(t, { scope: 'web:search' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(claimsOf(r.body.access_token).client_id, filed.id);
    assert.equal(claimsOf(r.body.access_token).sub, 'https://k8s.example/cluster-1#system:serviceaccount:ci:runner');
  });

  it('scope, audience and policy limits still apply to the federated session', async () => {
    await refused(async () => exchange(await jwt(), { scope: 'docs:write' }), 'invalid_scope', /not allowed by policy fed-planner/);
    await refused(async () => exchange(await jwt(), { audience: 'https://elsewhere' }), 'invalid_target', /audience/);
  });

  it("answers 503 when the issuer's JWKS cannot be fetched", async () => {
    const k = await issuerKey('kx');
    const t = await jwt({ sub: 'x', aud: 'cordon' }, { iss: unreachableIss, key: k });
    const seq = await auditHead(tb.b);
    const r = await exchange(t, { scope: 'web:search' });
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal(r.body.error, 'temporarily_unavailable');
    assert.equal((await denialsSince(tb.b, seq)).length, 1);
  });

  it('caches the JWKS between requests', async () => {
    const before = idp.fetches;
    for (let i = 0; i < 5; i++) assert.equal((await exchange(await jwt())).status, 200);
    assert.equal(idp.fetches, before);
  });
});
