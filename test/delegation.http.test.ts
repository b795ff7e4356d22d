import assert from 'node:assert/strict';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { startTestBroker, basic, postForm, type TestBroker } from './helpers/broker.ts';
import { setAgentEnabled } from '../src/agents/registry.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import {
  GRANT_TE,
  TT_ACCESS,
  auditHead,
  claimsOf,
  countTokens,
  delegateReq,
  denialsSince,
  introspect,
  mustDelegate,
  mustSession,
  policyDir,
  register,
  session,
  token,
  type Agent,
  type Res,
} from './delegation.kit.ts';

const EXTRA_POLICIES = {
  'relay.yaml': `name: relay
description: Passes reading work along; may delegate three levels down.
token_ttl: 10m
session_ttl: 1h
scopes: [docs:read, web:search, tickets:read]
delegation: { max_depth: 3, scopes: [docs:read, web:search, tickets:read] }
`,
  'narrow-relay.yaml': `name: narrow-relay
description: May hand work down one level only, and that limit holds for everything below it.
scopes: [docs:read, web:search, tickets:read]
delegation: { max_depth: 1, scopes: [docs:read, web:search, tickets:read] }
`,
  'wide-reader.yaml': `name: wide-reader
description: A reader whose own policy includes docs:write, which no planner hands down.
token_ttl: 5m
scopes: [docs:read, docs:write, web:search]
`,
};

describe('delegation over HTTP (RFC 8693)', function () {
  let tb: TestBroker;
  let planner: Agent;
  let reader: Agent;
  let reader2: Agent;
  let wide: Agent;
  let summarizer: Agent;
  let relayA: Agent;
  let relayB: Agent;
  let relayC: Agent;
  let narrow: Agent;
  let rs: Agent;

  before(async () => {
    tb = await startTestBroker({ policyDir: policyDir(EXTRA_POLICIES) });
    planner = await register(tb, 'planner', 'research-planner');
    reader = await register(tb, 'reader', 'doc-reader');
    reader2 = await register(tb, 'reader-two', 'doc-reader');
    wide = await register(tb, 'wide', 'wide-reader');
    summarizer = await register(tb, 'summarizer', 'support-summarizer');
    relayA = await register(tb, 'relay-a', 'relay');
    relayB = await register(tb, 'relay-b', 'relay');
    relayC = await register(tb, 'relay-c', 'relay');
    narrow = await register(tb, 'narrow', 'narrow-relay');
    rs = await register(tb, 'resource-server', 'doc-reader');
  });
  after(() => tb.close());

  /**
   * A refusal: status/error/description, nothing issued, exactly one deny row carrying `chain`,
   * and the broker still serves a good request afterwards.
   */
  async function refused(p: () => Promise<Res>, error: string, why: RegExp, chain?: string[] | null): Promise<Res> {
    const seq = await auditHead(tb.b);
    const before = await countTokens(tb.b);
    const r = await p();
    assert.ok(r.status >= 400 && r.status < 500, `4xx expected, got ${r.status} ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error, error, JSON.stringify(r.body));
    assert.match(r.body.error_description, why);
    assert.equal(Object.keys(r.body).sort().join(), 'error,error_description');
    assert.equal(await countTokens(tb.b), before, 'nothing issued');
    const denies = await denialsSince(tb.b, seq);
    assert.equal(denies.length, 1, `one deny row: ${JSON.stringify(denies)}`);
    assert.equal(denies[0].event, 'deny');
    assert.match(denies[0].reason!, new RegExp(error));
    if (chain !== undefined) assert.deepEqual(denies[0].chain, chain);
    const ok = await session(tb, reader, 'docs:read');
    assert.equal(ok.status, 200, 'the broker keeps serving');
    return r;
  }

  describe('a planner hands a reader a narrower token', () => {
    let parent: string;
    let child: string;

    before(async () => {
      parent = await mustSession(tb, planner, 'web:search docs:read docs:write tickets:read', { task: 'research-7' });
    });

    it('answers per RFC 8693 §2.2.1', async () => {
      const r = await delegateReq(tb, planner, parent, reader.id, 'docs:read web:search');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.issued_token_type, TT_ACCESS);
      assert.equal(r.body.token_type, 'Bearer');
      assert.equal(r.body.scope, 'docs:read web:search');
      assert.equal(typeof r.body.expires_in, 'number');
      assert.equal(r.headers.get('cache-control'), 'no-store');
      child = r.body.access_token;
    });

    it('carries the act chain: act.sub = reader, act.act.sub = planner, sub = planner, client_id = reader, depth 1', async () => {
      const p = claimsOf(parent);
      const c = claimsOf(child);
      assert.equal(c.sub, planner.id);
      assert.equal(c.client_id, reader.id);
      assert.equal(c.act.sub, reader.id);
      assert.equal(c.act.act.sub, planner.id);
      assert.equal(c.act.act.act, undefined);
      assert.equal(c.cordon_depth, 1);
      assert.equal(c.sid, p.sid);
      assert.equal(c.task, 'research-7');
      assert.ok(c.exp <= p.exp);
      assert.ok(c.exp - c.iat <= 300, 'doc-reader token_ttl 5m');
      const rec = await tb.b.db('tokens').where({ jti: c.jti }).first();
      assert.equal(rec.parent_jti, p.jti);
      const i = await introspect(tb, rs, child);
      assert.equal(i.active, true);
      assert.deepEqual(i.act, c.act);
      assert.equal(i.cordon_depth, 1);
    });

    it('records the grant in the audit log with the chain', async () => {
      const c = claimsOf(child);
      const row = await tb.b.db('audit').where({ jti: c.jti }).first();
      assert.equal(row.event, 'delegation.issue');
      assert.deepEqual(JSON.parse(row.chain), [planner.id, reader.id]);
    });

    it('refuses widening: a scope the parent token lacks', async () => {
      const narrowParent = await mustSession(tb, planner, 'docs:read');
      await refused(
        () => delegateReq(tb, planner, narrowParent, reader.id, 'docs:read tickets:read'),
        'invalid_scope',
        /tickets:read is not within the parent token scope/,
        [planner.id],
      );
    });

    it('refuses widening: a scope the planner may not hand down (delegation.scopes)', async () => {
      await refused(
        () => delegateReq(tb, planner, parent, wide.id, 'docs:write'),
        'invalid_scope',
        /docs:write is not within delegation.scopes of policy research-planner/,
        [planner.id],
      );
    });

    it("refuses widening: a scope outside the reader's own policy, and a wildcard reaching past the parent", async () => {
      await refused(() => delegateReq(tb, planner, parent, reader.id, 'docs:write'), 'invalid_scope', /not within policy doc-reader/, [planner.id]);
      await refused(() => delegateReq(tb, planner, parent, reader.id, 'docs:*'), 'invalid_scope', /docs:\* is not within the parent token scope/);
    });

    it("refuses lengthening: expires_in beyond the parent or the reader's token_ttl", async () => {
      const short = await mustSession(tb, planner, 'docs:read', { expires_in: '120' });
      await refused(() => delegateReq(tb, planner, short, reader.id, 'docs:read', { expires_in: '200' }), 'invalid_grant', /expires_in 200s exceeds/, [
        planner.id,
      ]);
      await refused(() => delegateReq(tb, planner, parent, reader.id, 'docs:read', { expires_in: '600' }), 'invalid_grant', /policy doc-reader/);
      const ok = await delegateReq(tb, planner, short, reader.id, 'docs:read', { expires_in: '60' });
      assert.equal(ok.status, 200);
      assert.equal(ok.body.expires_in, 60);
      // Without expires_in the child simply ends with its parent.
      const c = claimsOf(await mustDelegate(tb, planner, short, reader, 'docs:read'));
      assert.equal(c.exp, claimsOf(short).exp);
    });

    it('refuses deepening: a reader (max_depth 0) delegating onward', async () => {
      await refused(() => delegateReq(tb, reader, child, reader2.id, 'docs:read'), 'invalid_grant', /policy doc-reader does not allow delegation/, [
        planner.id,
        reader.id,
      ]);
    });

    it("refuses a foreign token: the reader exchanging the planner's token, the planner exchanging the reader's", async () => {
      await refused(() => delegateReq(tb, reader, parent, reader2.id, 'docs:read'), 'invalid_grant', /held by another agent/, [planner.id]);
      await refused(() => delegateReq(tb, planner, child, reader2.id, 'docs:read'), 'invalid_grant', /held by another agent/, [planner.id, reader.id]);
    });

    it('scope_policy=intersect trims to what every bound allows; an empty intersection is still refused', async () => {
      const p2 = await mustSession(tb, planner, 'web:search docs:read docs:write');
      const r = await delegateReq(tb, planner, p2, reader.id, 'docs:read docs:write tickets:read', { scope_policy: 'intersect', expires_in: '3600' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.scope, 'docs:read');
      assert.ok(r.body.expires_in <= 300, 'lifetime trimmed too');
      await refused(
        () => delegateReq(tb, planner, p2, reader.id, 'docs:write tickets:read', { scope_policy: 'intersect' }),
        'invalid_scope',
        /intersection .* is empty/,
      );
      await refused(() => delegateReq(tb, planner, p2, reader.id, 'docs:read', { scope_policy: 'union' }), 'invalid_request', /scope_policy/);
    });

    it('needs requested_actor and a scope', async () => {
      await refused(
        () => token(tb, planner, { grant_type: GRANT_TE, subject_token: parent, subject_token_type: TT_ACCESS, scope: 'docs:read' }),
        'invalid_request',
        /requested_actor/,
        [planner.id],
      );
      await refused(() => delegateReq(tb, planner, parent, reader.id, undefined), 'invalid_scope', /scope is required/);
    });
  });

  describe('depth', () => {
    it('the root policy caps the chain (relay chains under a planner stop at depth 2)', async () => {
      const root = await mustSession(tb, planner, 'docs:read');
      const d1 = await mustDelegate(tb, planner, root, relayA, 'docs:read');
      const d2 = await mustDelegate(tb, relayA, d1, relayB, 'docs:read');
      assert.equal(claimsOf(d2).cordon_depth, 2);
      assert.deepEqual(claimsOf(d2).act, { sub: relayB.id, act: { sub: relayA.id, act: { sub: planner.id } } });
      await refused(() => delegateReq(tb, relayB, d2, relayC.id, 'docs:read'), 'invalid_grant', /depth 3 exceeds max_depth 2 of root policy research-planner/, [
        planner.id,
        relayA.id,
        relayB.id,
      ]);
    });

    it('a support-summarizer root (max_depth 1) allows one level only', async () => {
      const root = await mustSession(tb, summarizer, 'tickets:read');
      const d1 = await mustDelegate(tb, summarizer, root, relayA, 'tickets:read');
      await refused(() => delegateReq(tb, relayA, d1, reader.id, 'tickets:read'), 'invalid_grant', /max_depth 1 of root policy support-summarizer/);
    });

    it("an intermediate holder's max_depth bounds everything delegated under it", async () => {
      const root = await mustSession(tb, relayA, 'docs:read');
      const d1 = await mustDelegate(tb, relayA, root, narrow, 'docs:read');
      const d2 = await mustDelegate(tb, narrow, d1, relayB, 'docs:read');
      assert.equal(claimsOf(d2).cordon_depth, 2);
      await refused(() => delegateReq(tb, relayB, d2, relayC.id, 'docs:read'), 'invalid_grant', /policy narrow-relay \(at depth 1 of the chain\)/, [
        relayA.id,
        narrow.id,
        relayB.id,
      ]);
    });

    it('refuses a delegation loop (A→B→A) and delegating to oneself', async () => {
      const root = await mustSession(tb, relayA, 'docs:read');
      const d1 = await mustDelegate(tb, relayA, root, relayB, 'docs:read');
      await refused(() => delegateReq(tb, relayB, d1, relayA.id, 'docs:read'), 'invalid_grant', /delegation loop: relay-a/, [relayA.id, relayB.id]);
      await refused(() => delegateReq(tb, relayA, root, relayA.name, 'docs:read'), 'invalid_grant', /delegation loop/);
    });
  });

  describe('audience', () => {
    it('a child never gets an audience its parent lacks', async () => {
      const root = await mustSession(tb, summarizer, 'tickets:read', { audience: 'https://tickets.internal' });
      assert.equal(claimsOf(root).aud, 'https://tickets.internal');
      // doc-reader allows no audiences: the child would have none in common with the parent.
      await refused(
        () => delegateReq(tb, summarizer, root, reader.id, 'tickets:read'),
        'invalid_target',
        /none of the parent token's audiences is allowed by policy doc-reader/,
      );
      await refused(
        () => delegateReq(tb, summarizer, root, reader.id, 'tickets:read', { audience: tb.url }),
        'invalid_target',
        /not within the parent token's audience/,
      );
      const p = await mustSession(tb, planner, 'docs:read');
      await refused(
        () => delegateReq(tb, planner, p, reader.id, 'docs:read', { resource: 'https://tickets.internal' }),
        'invalid_target',
        /not within the parent/,
      );
    });
  });

  describe('cascading revocation', () => {
    it("revoking the planner's token (POST /revoke) turns the reader's token inactive at once, and the feed lists both", async () => {
      const cursor = (await (await fetch(`${tb.url}/revocations`)).json()).cursor as number;
      const root = await mustSession(tb, planner, 'docs:read web:search');
      const child = await mustDelegate(tb, planner, root, relayA, 'docs:read');
      const grandchild = await mustDelegate(tb, relayA, child, reader, 'docs:read');
      for (const t of [root, child, grandchild]) assert.equal((await introspect(tb, rs, t)).active, true);

      const r = await postForm(`${tb.url}/revoke`, { token: root, token_type_hint: 'access_token' }, { authorization: basic(planner.id, planner.secret) });
      assert.equal(r.status, 200);
      for (const t of [root, child, grandchild]) assert.deepEqual(await introspect(tb, rs, t), { active: false });
      const feed = await (await fetch(`${tb.url}/revocations?since=${cursor}`)).json();
      const jtis = feed.revoked.filter((e: { kind: string }) => e.kind === 'jti').map((e: { value: string }) => e.value);
      for (const t of [root, child, grandchild]) assert.ok(jtis.includes(claimsOf(t).jti), 'feed lists every jti of the chain');
      // Nothing can be delegated from a dead link.
      await refused(() => delegateReq(tb, relayA, child, reader2.id, 'docs:read'), 'invalid_grant', /revoked/);
    });

    it('revoking a middle link leaves the parent alive and kills everything below', async () => {
      const root = await mustSession(tb, planner, 'docs:read');
      const child = await mustDelegate(tb, planner, root, relayA, 'docs:read');
      const grandchild = await mustDelegate(tb, relayA, child, reader, 'docs:read');
      // The orchestrator may revoke what it handed down.
      const r = await postForm(`${tb.url}/revoke`, { token: child }, { authorization: basic(planner.id, planner.secret) });
      assert.equal(r.status, 200);
      assert.equal((await introspect(tb, rs, root)).active, true);
      assert.equal((await introspect(tb, rs, child)).active, false);
      assert.equal((await introspect(tb, rs, grandchild)).active, false);
      // The reader may not revoke its parent.
      const up = await postForm(`${tb.url}/revoke`, { token: root }, { authorization: basic(reader.id, reader.secret) });
      assert.equal(up.status, 400);
      assert.equal((await introspect(tb, rs, root)).active, true);
    });

    it('revoking the session kills every token in it', async () => {
      const root = await mustSession(tb, planner, 'docs:read');
      const a = await mustDelegate(tb, planner, root, relayA, 'docs:read');
      const b2 = await mustDelegate(tb, planner, root, reader, 'docs:read');
      const c = await mustDelegate(tb, relayA, a, reader2, 'docs:read');
      await revokeSession(tb.b, claimsOf(root).sid, { actor: 'test', via: 'test' });
      for (const t of [root, a, b2, c]) assert.equal((await introspect(tb, rs, t)).active, false);
      await refused(() => delegateReq(tb, planner, root, reader.id, 'docs:read'), 'invalid_grant', /revoked/);
    });
  });

  describe('bad input', () => {
    let parent: string;
    before(async () => {
      parent = await mustSession(tb, planner, 'docs:read web:search');
    });

    it('a token from another issuer', async () => {
      const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
      const p = claimsOf(parent);
      const foreign = await new SignJWT({ ...p, iss: 'https://evil.example' })
        .setProtectedHeader({ alg: 'EdDSA', kid: 'evil', typ: 'at+jwt' })
        .sign(privateKey);
      await refused(() => delegateReq(tb, planner, foreign, reader.id, 'docs:read'), 'invalid_grant', /not signed by a key of this broker/, [planner.id]);
      // Our kid, our issuer, someone else's key.
      const kid = tb.b.keys.active().kid;
      const forged = await new SignJWT({ ...p, scope: 'docs:read docs:write' }).setProtectedHeader({ alg: 'EdDSA', kid, typ: 'at+jwt' }).sign(privateKey);
      await refused(() => delegateReq(tb, planner, forged, reader.id, 'docs:read'), 'invalid_grant', /signature is invalid/);
    });

    it('expired and not-yet-valid subject tokens', async () => {
      const short = await mustSession(tb, planner, 'docs:read', { expires_in: '60' });
      tb.clock.advance(61_000 + tb.b.config.clockSkewSec * 1000);
      await refused(() => delegateReq(tb, planner, short, reader.id, 'docs:read'), 'invalid_grant', /expired/, [planner.id]);
      const fresh = await mustSession(tb, planner, 'docs:read');
      tb.clock.advance(-(5 * 60_000));
      try {
        await refused(() => delegateReq(tb, planner, fresh, reader.id, 'docs:read'), 'invalid_grant', /nbf|iat/, [planner.id]);
      } finally {
        tb.clock.advance(5 * 60_000);
      }
    });

    it('a wrong or missing subject_token_type, and an access token sent as a bootstrap token or an external JWT', async () => {
      await refused(
        () => delegateReq(tb, planner, parent, reader.id, 'docs:read', { subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' }),
        'invalid_request',
        /unsupported subject_token_type/,
        [planner.id],
      );
      await refused(
        () => token(tb, planner, { grant_type: GRANT_TE, subject_token: parent, requested_actor: reader.id, scope: 'docs:read' }),
        'invalid_request',
        /subject_token_type is required/,
        [planner.id],
      );
      await refused(
        () => token(tb, planner, { grant_type: GRANT_TE, subject_token_type: TT_ACCESS, requested_actor: reader.id, scope: 'docs:read' }),
        'invalid_request',
        /subject_token is required/,
        [planner.id],
      );
      await refused(
        () => delegateReq(tb, planner, parent, reader.id, 'docs:read', { subject_token_type: 'urn:cordon:token-type:bootstrap' }),
        'invalid_request',
        /requested_actor is not used with a bootstrap token/,
      );
      await refused(
        () => token(tb, planner, { grant_type: GRANT_TE, subject_token: parent, subject_token_type: 'urn:cordon:token-type:bootstrap', scope: 'docs:read' }),
        'invalid_grant',
        /not a bootstrap token/,
        [planner.id],
      );
      await refused(
        () =>
          token(tb, planner, { grant_type: GRANT_TE, subject_token: parent, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', scope: 'docs:read' }),
        'invalid_grant',
        /own tokens/,
        [planner.id],
      );
    });

    it('actor_token without actor_token_type (and actor tokens at all)', async () => {
      await refused(
        () => delegateReq(tb, planner, parent, reader.id, 'docs:read', { actor_token: parent }),
        'invalid_request',
        /actor_token_type is required/,
        [planner.id],
      );
      await refused(
        () => delegateReq(tb, planner, parent, reader.id, 'docs:read', { actor_token: parent, actor_token_type: TT_ACCESS }),
        'invalid_request',
        /actor_token is not used/,
      );
      await refused(
        () => delegateReq(tb, planner, parent, reader.id, 'docs:read', { actor_token_type: TT_ACCESS }),
        'invalid_request',
        /only valid with actor_token/,
      );
      await refused(
        () => delegateReq(tb, planner, parent, reader.id, 'docs:read', { requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }),
        'invalid_request',
        /requested_token_type/,
      );
    });

    it('requested_actor that does not exist, is malformed, or is disabled', async () => {
      await refused(() => delegateReq(tb, planner, parent, 'agt_doesnotexist', 'docs:read'), 'invalid_request', /does not exist/, [planner.id]);
      await refused(() => delegateReq(tb, planner, parent, '../../etc/passwd', 'docs:read'), 'invalid_request', /malformed/);
      const off = await register(tb, 'reader-off', 'doc-reader');
      await setAgentEnabled(tb.b, off.id, false);
      await refused(() => delegateReq(tb, planner, parent, off.id, 'docs:read'), 'invalid_request', /reader-off is disabled/, [planner.id]);
      await setAgentEnabled(tb.b, off.id, true);
      assert.equal((await delegateReq(tb, planner, parent, off.id, 'docs:read')).status, 200);
    });

    it('a forged token with 1,000 nested act levels, signed by a foreign key', async () => {
      const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
      const p = claimsOf(parent);
      const kid = tb.b.keys.active().kid;
      const forge = async (levels: number, sub: (i: number) => string) => {
        let act: Record<string, unknown> = { sub: planner.id };
        for (let i = 0; i < levels; i++) act = { sub: sub(i), act };
        return new SignJWT({ ...p, act, cordon_depth: 0 }).setProtectedHeader({ alg: 'EdDSA', kid, typ: 'at+jwt' }).sign(privateKey);
      };
      // With real agent ids the form is over oidc-provider's 56 KiB body limit: refused before any grant logic.
      const huge = await forge(1000, (i) => (i % 2 ? planner.id : reader.id));
      assert.ok(huge.length > 56 * 1024);
      await refused(() => delegateReq(tb, planner, huge, reader.id, 'docs:read'), 'invalid_request', /request body/);
      // With short subs it reaches the broker, which refuses it on size before parsing any JSON.
      const deep = await forge(1000, () => 'x');
      assert.ok(deep.length > 8192 && deep.length < 56 * 1024);
      await refused(() => delegateReq(tb, planner, deep, reader.id, 'docs:read'), 'invalid_grant', /compact JWS/, [planner.id]);
      let act: Record<string, unknown>;
      // 100 levels fit under the size cap and reach the signature check.
      act = { sub: planner.id };
      for (let i = 0; i < 100; i++) act = { sub: reader.id, act };
      const mid = await new SignJWT({ ...p, act }).setProtectedHeader({ alg: 'EdDSA', kid, typ: 'at+jwt' }).sign(privateKey);
      await refused(() => delegateReq(tb, planner, mid, reader.id, 'docs:read'), 'invalid_grant', /signature is invalid/);
      // And at introspection it is simply inactive.
      assert.deepEqual(await introspect(tb, rs, deep), { active: false });
    });

    it('alg none, garbage, a public key as JWKS…: all clear 4xx', async () => {
      const p = claimsOf(parent);
      const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${Buffer.from(JSON.stringify(p)).toString('base64url')}.`;
      await refused(() => delegateReq(tb, planner, none, reader.id, 'docs:read'), 'invalid_grant', /compact JWS|algorithm/);
      await refused(() => delegateReq(tb, planner, 'a.b.c', reader.id, 'docs:read'), 'invalid_grant', /header/);
      const { publicKey } = await generateKeyPair('ES256');
      const jwk = JSON.stringify(await exportJWK(publicKey));
      await refused(() => delegateReq(tb, planner, jwk, reader.id, 'docs:read'), 'invalid_grant', /compact JWS/);
    });
  });
});
