import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { requireDpopForToken, verifyDpopProof } from '../src/tokens/dpop.ts';
import { verifySignature } from '../src/tokens/verify.ts';
import { CordonError } from '../src/errors.ts';
import {
  auditHead,
  claimsOf,
  countTokens,
  delegateReq,
  denialsSince,
  dpopKey,
  dpopProof,
  introspect,
  mustSession,
  policyDir,
  register,
  session,
  type Agent,
  type DpopKey,
  type Res,
} from './delegation.kit.ts';

describe('DPoP (RFC 9449)', function () {
  let tb: TestBroker;
  let planner: Agent;
  let reader: Agent;
  let strict: Agent;
  let strictOrchestrator: Agent;
  let k: DpopKey;
  let htu: string;

  before(async () => {
    tb = await startTestBroker({
      policyDir: policyDir({
        'dpop-reader.yaml': `name: dpop-reader
scopes: [docs:read]
require_dpop: true
`,
        'dpop-orchestrator.yaml': `name: dpop-orchestrator
scopes: [docs:read]
require_dpop: true
delegation: { max_depth: 1, scopes: [docs:read] }
`,
      }),
    });
    planner = await register(tb, 'planner', 'research-planner');
    reader = await register(tb, 'reader', 'doc-reader');
    strict = await register(tb, 'strict-reader', 'dpop-reader');
    strictOrchestrator = await register(tb, 'strict-orch', 'dpop-orchestrator');
    k = await dpopKey();
    htu = `${tb.url}/token`;
  });
  after(() => tb.close());

  const iat = () => Math.floor(tb.clock.now() / 1000);
  const proof = (key: DpopKey = k, opts: Parameters<typeof dpopProof>[3] = {}) => dpopProof(key, 'POST', htu, { iat: iat(), ...opts });

  async function refused(p: () => Promise<Res>, error: string, why: RegExp): Promise<void> {
    const seq = await auditHead(tb.b);
    const before = await countTokens(tb.b);
    const r = await p();
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error, error, JSON.stringify(r.body));
    assert.match(r.body.error_description, why);
    assert.equal(await countTokens(tb.b), before);
    assert.equal((await denialsSince(tb.b, seq)).length, 1);
  }

  it('a client that sends a proof gets a DPoP token bound to its key (cnf.jkt)', async () => {
    const r = await session(tb, planner, 'docs:read', {}, { dpop: await proof() });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.token_type, 'DPoP');
    const c = claimsOf(r.body.access_token);
    assert.deepEqual(c.cnf, { jkt: k.jkt });
    const i = await introspect(tb, reader, r.body.access_token);
    assert.equal(i.token_type, 'DPoP');
    assert.deepEqual(i.cnf, { jkt: k.jkt });
  });

  it('works with EdDSA proofs too', async () => {
    const ed = await dpopKey('EdDSA');
    const r = await session(tb, planner, 'docs:read', {}, { dpop: await proof(ed) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(claimsOf(r.body.access_token).cnf.jkt, ed.jkt);
  });

  it('refuses a replayed proof', async () => {
    const p = await proof();
    assert.equal((await session(tb, planner, 'docs:read', {}, { dpop: p })).status, 200);
    await refused(() => session(tb, planner, 'docs:read', {}, { dpop: p }), 'invalid_dpop_proof', /used before/);
  });

  it('refuses malformed proofs: wrong htu/htm, stale or future iat, wrong typ, symmetric alg, private key in the header', async () => {
    await refused(
      async () => session(tb, planner, 'docs:read', {}, { dpop: await dpopProof(k, 'POST', `${tb.url}/other`, { iat: iat() }) }),
      'invalid_dpop_proof',
      /htu/,
    );
    await refused(async () => session(tb, planner, 'docs:read', {}, { dpop: await dpopProof(k, 'GET', htu, { iat: iat() }) }), 'invalid_dpop_proof', /htm/);
    await refused(
      async () => session(tb, planner, 'docs:read', {}, { dpop: await proof(k, { iat: iat() - 600 }) }),
      'invalid_dpop_proof',
      /too old|could not be verified/,
    );
    await refused(
      async () => session(tb, planner, 'docs:read', {}, { dpop: await proof(k, { iat: iat() + 600 }) }),
      'invalid_dpop_proof',
      /future|could not be verified/,
    );
    const wrongTyp = await new SignJWT({ htm: 'POST', htu, jti: 'abcdefghijkl' })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', jwk: k.publicJwk })
      .setIssuedAt(iat())
      .sign(k.privateKey);
    await refused(async () => session(tb, planner, 'docs:read', {}, { dpop: wrongTyp }), 'invalid_dpop_proof', /typ/);
    const hs = await new SignJWT({ htm: 'POST', htu, jti: 'abcdefghijkl' })
      .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt' })
      .setIssuedAt(iat())
      .sign(new Uint8Array(32));
    await refused(async () => session(tb, planner, 'docs:read', {}, { dpop: hs }), 'invalid_dpop_proof', /algorithm/);
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const priv = await exportJWK(privateKey);
    const leaky = await new SignJWT({ htm: 'POST', htu, jti: 'abcdefghijkl' })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: priv })
      .setIssuedAt(iat())
      .sign(privateKey);
    await refused(async () => session(tb, planner, 'docs:read', {}, { dpop: leaky }), 'invalid_dpop_proof', /public/);
    await refused(async () => session(tb, planner, 'docs:read', {}, { dpop: 'garbage' }), 'invalid_dpop_proof', /compact JWS/);
  });

  it('a require_dpop policy refuses a session without a proof', async () => {
    await refused(() => session(tb, strict, 'docs:read'), 'invalid_request', /policy dpop-reader requires a DPoP proof/);
    const r = await session(tb, strict, 'docs:read', {}, { dpop: await proof() });
    assert.equal(r.status, 200);
    assert.equal(r.body.token_type, 'DPoP');
  });

  describe('delegation', () => {
    it("binds the sub-agent's token to the key the orchestrator names (dpop_jkt)", async () => {
      const sub = await dpopKey();
      const parent = await mustSession(tb, planner, 'docs:read');
      const r = await delegateReq(tb, planner, parent, reader.id, 'docs:read', { dpop_jkt: sub.jkt });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.token_type, 'DPoP');
      assert.deepEqual(claimsOf(r.body.access_token).cnf, { jkt: sub.jkt });
      // The orchestrator's own proof key does not leak into the child.
      const r2 = await delegateReq(tb, planner, parent, reader.id, 'docs:read', {}, { dpop: await proof() });
      assert.equal(r2.status, 200);
      assert.equal(claimsOf(r2.body.access_token).cnf, undefined);
    });

    it('refuses a malformed dpop_jkt, and a require_dpop sub-agent without one', async () => {
      const parent = await mustSession(tb, planner, 'docs:read');
      await refused(() => delegateReq(tb, planner, parent, reader.id, 'docs:read', { dpop_jkt: 'not-a-thumbprint' }), 'invalid_request', /dpop_jkt/);
      await refused(() => delegateReq(tb, planner, parent, strict.id, 'docs:read'), 'invalid_request', /policy dpop-reader requires DPoP/);
      const sub = await dpopKey();
      const ok = await delegateReq(tb, planner, parent, strict.id, 'docs:read', { dpop_jkt: sub.jkt });
      assert.equal(ok.status, 200);
    });

    it('a DPoP-bound subject token can only be exchanged with a proof made with its key', async () => {
      const s = await session(tb, strictOrchestrator, 'docs:read', {}, { dpop: await proof() });
      assert.equal(s.status, 200, JSON.stringify(s.body));
      const parent = s.body.access_token as string;
      await refused(() => delegateReq(tb, strictOrchestrator, parent, reader.id, 'docs:read'), 'invalid_grant', /DPoP-bound/);
      const thief = await dpopKey();
      await refused(
        async () => delegateReq(tb, strictOrchestrator, parent, reader.id, 'docs:read', {}, { dpop: await proof(thief) }),
        'invalid_grant',
        /DPoP-bound/,
      );
      const sub = await dpopKey();
      const ok = await delegateReq(tb, strictOrchestrator, parent, reader.id, 'docs:read', { dpop_jkt: sub.jkt }, { dpop: await proof() });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
    });

    it('a bound parent never yields a bearer child: without dpop_jkt the delegation is refused, whatever the sub-agent policy says', async () => {
      // The orchestrator's policy requires DPoP; the reader's does not. Today's bug: a plain bearer child.
      const s = await session(tb, strictOrchestrator, 'docs:read', {}, { dpop: await proof() });
      assert.equal(s.status, 200, JSON.stringify(s.body));
      const parent = s.body.access_token as string;
      await refused(
        async () => delegateReq(tb, strictOrchestrator, parent, reader.id, 'docs:read', {}, { dpop: await proof() }),
        'invalid_request',
        /DPoP-bound.*dpop_jkt/,
      );
      // A bound parent of a policy that does not itself require DPoP (a planner that chose DPoP) too.
      const p2 = await session(tb, planner, 'docs:read', {}, { dpop: await proof() });
      assert.equal(p2.body.token_type, 'DPoP');
      await refused(
        async () => delegateReq(tb, planner, p2.body.access_token, reader.id, 'docs:read', {}, { dpop: await proof() }),
        'invalid_request',
        /DPoP-bound.*dpop_jkt/,
      );
      const sub = await dpopKey();
      const ok = await delegateReq(tb, planner, p2.body.access_token, reader.id, 'docs:read', { dpop_jkt: sub.jkt }, { dpop: await proof() });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.deepEqual(claimsOf(ok.body.access_token).cnf, { jkt: sub.jkt });
    });
  });

  describe('requireDpopForToken (the resource-side check)', () => {
    const url = 'http://127.0.0.1/credentials/docs-vault';
    let bound: string;
    let claims: Awaited<ReturnType<typeof verifySignature>>;
    let unbound: string;

    before(async () => {
      const r = await session(tb, planner, 'docs:read', {}, { dpop: await proof() });
      bound = r.body.access_token;
      claims = await verifySignature(tb.b, bound, 'invalid_token');
      unbound = await mustSession(tb, planner, 'docs:read');
    });

    const ath = (t: string) => createHash('sha256').update(t).digest('base64url');
    const rsProof = (key: DpopKey, opts: { ath?: string; htu?: string; htm?: string; jti?: string } = {}) =>
      dpopProof(key, opts.htm ?? 'POST', opts.htu ?? url, { iat: iat(), ath: opts.ath ?? ath(bound), jti: opts.jti });

    it('accepts a fresh proof made with the bound key, for this request and this token', async () => {
      const jkt = await requireDpopForToken(tb.b, { claims, proof: await rsProof(k), method: 'POST', url, accessToken: bound });
      assert.equal(jkt, k.jkt);
    });

    it('a DPoP-bound token is refused without a proof (invalid_token)', async () => {
      for (const p of [undefined, null, '']) {
        await assert.rejects(
          requireDpopForToken(tb.b, { claims, proof: p, method: 'POST', url, accessToken: bound }),
          (e: CordonError) => e.code === 'invalid_token' && /DPoP-bound/.test(e.description),
        );
      }
    });

    it('refuses a proof made with another key (invalid_token: the token was stolen)', async () => {
      const thief = await dpopKey();
      await assert.rejects(
        requireDpopForToken(tb.b, { claims, proof: await rsProof(thief), method: 'POST', url, accessToken: bound }),
        (e: CordonError) => e.code === 'invalid_token' && e.reason === 'dpop_key_mismatch',
      );
    });

    it('refuses a replayed proof, a proof for another token (ath), another URL or method (invalid_dpop_proof)', async () => {
      const p = await rsProof(k);
      await requireDpopForToken(tb.b, { claims, proof: p, method: 'POST', url, accessToken: bound });
      await assert.rejects(
        requireDpopForToken(tb.b, { claims, proof: p, method: 'POST', url, accessToken: bound }),
        (e: CordonError) => e.code === 'invalid_dpop_proof' && e.reason === 'dpop_replay',
      );
      await assert.rejects(
        requireDpopForToken(tb.b, { claims, proof: await rsProof(k, { ath: ath(unbound) }), method: 'POST', url, accessToken: bound }),
        (e: CordonError) => e.code === 'invalid_dpop_proof' && /ath/.test(e.description),
      );
      await assert.rejects(
        requireDpopForToken(tb.b, { claims, proof: await rsProof(k, { htu: 'http://127.0.0.1/other' }), method: 'POST', url, accessToken: bound }),
        (e: CordonError) => e.code === 'invalid_dpop_proof',
      );
      await assert.rejects(
        requireDpopForToken(tb.b, { claims, proof: await rsProof(k, { htm: 'GET' }), method: 'POST', url, accessToken: bound }),
        (e: CordonError) => e.code === 'invalid_dpop_proof',
      );
      await assert.rejects(
        requireDpopForToken(tb.b, { claims, proof: [await rsProof(k), await rsProof(k)], method: 'POST', url, accessToken: bound }),
        (e: CordonError) => e.code === 'invalid_dpop_proof',
      );
    });

    it('compares htu after normalising both sides (RFC 9449 §4.3): host case and default port do not matter, the path does', async () => {
      const at = 'https://broker.example/credentials/docs-vault';
      const use = async (htu: string, url = at) =>
        requireDpopForToken(tb.b, { claims, proof: await rsProof(k, { htu }), method: 'POST', url, accessToken: bound });
      assert.equal(await use('HTTPS://Broker.EXAMPLE:443/credentials/docs-vault'), k.jkt);
      assert.equal(await use('https://broker.example/credentials/docs-vault', 'https://BROKER.example:443/credentials/docs-vault?x=1'), k.jkt);
      assert.equal(await use('http://127.0.0.1:80/credentials/docs-vault', 'http://127.0.0.1/credentials/docs-vault'), k.jkt);
      await assert.rejects(use('https://broker.example/credentials/other'), (e: CordonError) => e.code === 'invalid_dpop_proof' && /htu/.test(e.description));
      await assert.rejects(
        use('https://broker.example:8443/credentials/docs-vault'),
        (e: CordonError) => e.code === 'invalid_dpop_proof' && /htu/.test(e.description),
      );
      await assert.rejects(
        use('https://broker.example/Credentials/docs-vault'),
        (e: CordonError) => e.code === 'invalid_dpop_proof',
        'the path is case-sensitive',
      );
    });

    it('a token that is not DPoP-bound needs no proof', async () => {
      const c = await verifySignature(tb.b, unbound, 'invalid_token');
      assert.equal(await requireDpopForToken(tb.b, { claims: c, proof: undefined, method: 'POST', url, accessToken: unbound }), null);
    });

    it('a proof jti is remembered per key', async () => {
      const p = await rsProof(k, { jti: 'same-jti-12345' });
      await verifyDpopProof(tb.b, p, { method: 'POST', url, accessToken: bound });
      const other = await dpopKey();
      await verifyDpopProof(tb.b, await rsProof(other, { jti: 'same-jti-12345' }), { method: 'POST', url, accessToken: bound });
      await assert.rejects(verifyDpopProof(tb.b, p, { method: 'POST', url, accessToken: bound }), (e: CordonError) => e.reason === 'dpop_replay');
    });
  });
});
