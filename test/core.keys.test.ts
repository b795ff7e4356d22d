import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { rotateSigningKey, listKeys } from '../src/keys/keyring.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

describe('core: signing keys and rotation', () => {
  let t: TestBroker;
  let agent: { id: string; secret: string };
  const keyDir = (): string => join(t.dir, 'keys');

  before(async () => {
    t = await startTestBroker();
    agent = await t.register('summarizer', 'support-summarizer');
  });
  after(async () => {
    await t?.close();
  });

  const session = async (): Promise<{ jwt: string; kid: string; exp: number }> => {
    const r = await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'tickets:read' }, { authorization: basic(agent.id, agent.secret) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return { jwt: r.body.access_token, kid: decodeProtectedHeader(r.body.access_token).kid!, exp: decodeJwt(r.body.access_token).exp! };
  };
  const introspect = async (jwt: string): Promise<Record<string, unknown>> =>
    (await postForm(`${t.url}/introspect`, { token: jwt }, { authorization: basic(agent.id, agent.secret) })).body;
  const jwks = async (): Promise<JSONWebKeySet> => {
    const r = await fetch(`${t.url}/jwks`);
    assert.equal(r.status, 200);
    return (await r.json()) as JSONWebKeySet;
  };
  const verifyOffline = (jwt: string, set: JSONWebKeySet) =>
    jwtVerify(jwt, createLocalJWKSet(set), { issuer: t.url, typ: 'at+jwt', algorithms: ['EdDSA', 'ES256'], currentDate: new Date(t.clock.now()) });

  it('private key files are mode 0600 and the key directory is private', () => {
    const files = readdirSync(keyDir());
    assert.ok(files.some((f) => f.endsWith('.jwk.json')), `key files: ${files}`);
    for (const f of files) {
      const mode = statSync(join(keyDir(), f)).mode & 0o777;
      assert.equal(mode, 0o600, `${f} has mode ${mode.toString(8)}`);
    }
    assert.equal(statSync(keyDir()).mode & 0o077, 0, 'no group or other access to the key directory');
  });

  it('rotation: old tokens keep verifying, new tokens carry the new kid, /jwks publishes both until the old key retires', async () => {
    const before = await session();
    const jwks0 = await jwks();
    assert.deepEqual(jwks0.keys.map((k) => k.kid), [before.kid], 'one key before rotation, the one that signed');

    const longest = 15 * 60_000;
    const created = await rotateSigningKey(t.b.db, keyDir(), t.b.config.keyAlg, t.clock, longest);
    await t.b.keys.reload();
    assert.notEqual(created.kid, before.kid);

    // The new private key is private too.
    assert.equal(statSync(join(keyDir(), `${created.kid}.jwk.json`)).mode & 0o777, 0o600);

    const rows = await listKeys(t.b.db);
    const old = rows.find((r) => r.kid === before.kid)!;
    assert.equal(old.status, 'retired');
    assert.equal(rows.find((r) => r.kid === created.kid)!.status, 'active');
    assert.ok(old.publishUntil! >= before.exp * 1000, 'the old key stays published at least until its last token expires');
    assert.ok(old.publishUntil! >= t.clock.now() + longest, 'and for as long as a token issued before the reload could live');

    const jwks1 = await jwks();
    assert.deepEqual(new Set(jwks1.keys.map((k) => k.kid)), new Set([before.kid, created.kid]));
    for (const k of jwks1.keys) assert.ok(!('d' in k), 'public keys only');

    // The old token still verifies offline and through the broker.
    const { payload } = await verifyOffline(before.jwt, jwks1);
    assert.equal(payload.client_id, agent.id);
    const remote = createRemoteJWKSet(new URL(`${t.url}/jwks`));
    await jwtVerify(before.jwt, remote, { issuer: t.url, typ: 'at+jwt', algorithms: ['EdDSA', 'ES256'] });
    assert.equal((await introspect(before.jwt)).active, true);

    // New tokens use the new key.
    const after = await session();
    assert.equal(after.kid, created.kid);
    await verifyOffline(after.jwt, jwks1);
    assert.equal((await t.b.db('tokens').where({ jti: decodeJwt(after.jwt).jti }).first()).kid, created.kid, 'the record names the signing kid');

    // Just before publish_until the old key is still out; at publish_until it is gone.
    t.clock.set(old.publishUntil! - 1000);
    await t.b.keys.reload();
    assert.equal((await jwks()).keys.length, 2);
    t.clock.set(old.publishUntil!);
    await t.b.keys.reload();
    const jwks2 = await jwks();
    assert.deepEqual(jwks2.keys.map((k) => k.kid), [created.kid]);
    // A token from the retired key is no longer vouched for, offline or online.
    await assert.rejects(verifyOffline(before.jwt, jwks2));
    assert.deepEqual(await introspect(before.jwt), { active: false });
    // And the broker keeps issuing with the new key.
    const later = await session();
    assert.equal(later.kid, created.kid);
    assert.equal((await introspect(later.jwt)).active, true);
  });

  it('the /jwks endpoint picks up a rotation made elsewhere (e.g. by the CLI) without an explicit reload', async () => {
    const kidBefore = t.b.keys.active().kid;
    const created = await rotateSigningKey(t.b.db, keyDir(), t.b.config.keyAlg, t.clock, 15 * 60_000);
    t.clock.advance(11_000); // past the keyring's reload interval
    const s = await session();
    assert.equal(s.kid, created.kid);
    assert.ok((await jwks()).keys.some((k) => k.kid === kidBefore), 'the previous key is still published');
  });

  it('each key creation and rotation is in the audit chain', async () => {
    const rows = await t.b.db('audit').whereIn('event', ['key.create', 'key.rotate']).orderBy('seq');
    assert.deepEqual(rows.map((r) => r.event), ['key.create', 'key.rotate', 'key.rotate']);
    const v = await verifyAudit(t.b.db);
    assert.equal(v.ok, true, JSON.stringify(v));
  });
});
