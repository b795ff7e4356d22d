/**
 * Decisions come from the record: a leaked signing key must not mint authority the records never
 * granted. A forged token (a real jti, signed with the broker's own key, with widened claims) is
 * refused at delegation, introspection and /credentials, and each refusal is audited once.
 */
import assert from 'node:assert/strict';
import { signAccessToken } from '../src/tokens/mint.ts';
import type { AccessTokenClaims } from '../src/tokens/claims.ts';
import { auditHead, auditSince, claimsOf, delegateReq, denialsSince, introspect, mustDelegate, mustSession, type Agent } from './delegation.kit.ts';
import { credFixture, type CredFixture } from './credentials.kit.ts';

describe('decisions come from the record, not from the presented claims', function () {
  let f: CredFixture;
  let owner: Agent;
  let worker: Agent;
  let rs: Agent;

  before(async () => {
    f = await credFixture();
    owner = await f.agent('record-owner', 'creds-owner');
    worker = await f.agent('record-worker', 'creds-worker');
    rs = await f.agent('record-rs', 'creds-none');
  });
  after(() => f.stop());

  /** The same token, re-signed with the broker's key after `change` edited its claims (what a key thief could do). */
  async function forge(jwt: string, change: (c: AccessTokenClaims) => void): Promise<string> {
    const c = structuredClone(claimsOf(jwt)) as AccessTokenClaims;
    change(c);
    return (await signAccessToken(f.tb.b.keys, c)).jwt;
  }

  const forgeries: Array<[string, (c: AccessTokenClaims) => void, string]> = [
    ['a wider scope', (c) => void (c.scope = `${c.scope} cred:vault-db cred:s3`), 'scope'],
    ['a later exp', (c) => void (c.exp += 3600), 'exp'],
    ['a shallower depth', (c) => void (c.cordon_depth = 0), 'cordon_depth'],
    ['another audience', (c) => void (c.aud = 'https://elsewhere.example'), 'aud'],
    ['a dropped DPoP binding', (c) => void delete c.cnf, 'cnf'],
    ['a rewritten actor chain', (c) => void (c.act = { sub: c.client_id }), 'act'],
  ];

  for (const [what, change, field] of forgeries) {
    it(`${what}: refused at delegation, /credentials and introspection, each audited with the claim that differs`, async () => {
      const root = await mustSession(f.tb, owner, 'work:read cred:vault-token');
      // A delegated, DPoP-bound token has every claim the check compares (act, cnf, depth 1).
      const sub = await mustDelegate(f.tb, owner, root, worker, 'work:read cred:vault-token', { dpop_jkt: 'A'.repeat(43) });
      const base = field === 'cnf' || field === 'act' || field === 'cordon_depth' ? sub : root;
      const forged = await forge(base, change);

      let seq = await auditHead(f.tb.b);
      const d = await delegateReq(f.tb, owner, forged, worker.id, 'work:read');
      assert.equal(d.status, 400, JSON.stringify(d.body));
      assert.equal(d.body.error, 'invalid_grant');
      let denials = await denialsSince(f.tb.b, seq);
      assert.equal(denials.length, 1, JSON.stringify(denials));
      assert.equal(denials[0].params.reason_tag, 'token_mismatch');
      assert.deepEqual(denials[0].params.mismatched, [field]);
      // And an alarm: a validly signed token that differs from its record means the signing key leaked.
      const alarms = (await auditSince(f.tb.b, seq)).filter((r) => r.event === 'alarm');
      assert.equal(alarms.length, 1);
      assert.match(alarms[0].reason!, new RegExp(`token_mismatch.*${field}`));

      seq = await auditHead(f.tb.b);
      const c = await f.cred('vault-token', forged);
      assert.equal(c.status, 401, JSON.stringify(c.body));
      assert.equal(c.body.credentials, undefined);
      denials = await denialsSince(f.tb.b, seq);
      assert.equal(denials.length, 1, JSON.stringify(denials));
      assert.equal(denials[0].params.reason_tag, 'token_mismatch');

      // Introspection refuses nothing (the token is simply inactive), but the alarm is raised.
      seq = await auditHead(f.tb.b);
      assert.deepEqual(await introspect(f.tb, rs, forged), { active: false });
      assert.equal((await denialsSince(f.tb.b, seq)).length, 0);
      const alarms2 = (await auditSince(f.tb.b, seq)).filter((r) => r.event === 'alarm');
      assert.equal(alarms2.length, 1);
      assert.match(alarms2[0].reason!, /token_mismatch/);

      // The genuine token is untouched by all this.
      assert.equal((await introspect(f.tb, rs, base)).active, true);
    });
  }

  it('introspection answers what the record says', async () => {
    const root = await mustSession(f.tb, owner, 'work:read cred:vault-token', { task: 'T-1' });
    const sub = await mustDelegate(f.tb, owner, root, worker, 'work:read');
    const i = await introspect(f.tb, rs, sub);
    const rec = await f.tb.b
      .db('tokens')
      .where({ jti: claimsOf(sub).jti })
      .first();
    assert.equal(i.scope, rec.scope);
    assert.equal(i.exp, Math.floor(Number(rec.expires_at) / 1000));
    assert.equal(i.cordon_depth, Number(rec.depth));
    assert.deepEqual(i.act, JSON.parse(rec.act));
    assert.equal(i.task, 'T-1');
    assert.equal(i.sub, owner.id);
  });
});
