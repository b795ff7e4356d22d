import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { ensureSigningKey, rotateSigningKey, listKeys, Keyring, KEY_ACTIVATION_MS, KEYRING_RELOAD_MS } from '../src/keys/keyring.ts';
import { ManualClock } from '../src/clock.ts';
import { signAccessToken } from '../src/tokens/mint.ts';
import { verifySignature } from '../src/tokens/verify.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { migrate, openDb } from '../src/store/db.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

/** The same token with another kid in its header (the signature no longer matters: the kid is looked up first). */
const forgeWithKid = (jwt: string, kid: string): string => {
  const [h, p, sig] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  return [Buffer.from(JSON.stringify({ ...header, kid })).toString('base64url'), p, sig].join('.');
};

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
    assert.ok(
      files.some((f) => f.endsWith('.jwk.json')),
      `key files: ${files}`,
    );
    for (const f of files) {
      const mode = statSync(join(keyDir(), f)).mode & 0o777;
      assert.equal(mode, 0o600, `${f} has mode ${mode.toString(8)}`);
    }
    assert.equal(statSync(keyDir()).mode & 0o077, 0, 'no group or other access to the key directory');
  });

  it('rotation: old tokens keep verifying, new tokens carry the new kid, /jwks publishes both until the old key retires', async () => {
    const before = await session();
    const jwks0 = await jwks();
    assert.deepEqual(
      jwks0.keys.map((k) => k.kid),
      [before.kid],
      'one key before rotation, the one that signed',
    );

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
    assert.ok(
      old.publishUntil! >= t.clock.now() + KEY_ACTIVATION_MS + KEYRING_RELOAD_MS + longest,
      'and for as long as a token it may still sign, on any replica, could live',
    );

    const jwks1 = await jwks();
    assert.deepEqual(new Set(jwks1.keys.map((k) => k.kid)), new Set([before.kid, created.kid]));
    for (const k of jwks1.keys) assert.ok(!('d' in k), 'public keys only');

    // The old token still verifies offline and through the broker.
    const { payload } = await verifyOffline(before.jwt, jwks1);
    assert.equal(payload.client_id, agent.id);
    const remote = createRemoteJWKSet(new URL(`${t.url}/jwks`));
    await jwtVerify(before.jwt, remote, { issuer: t.url, typ: 'at+jwt', algorithms: ['EdDSA', 'ES256'] });
    assert.equal((await introspect(before.jwt)).active, true);

    // The new key is published first; the old one signs until the new one activates, so a replica
    // that has not re-read the key table yet never meets a token with a kid it does not know.
    const staged = await session();
    assert.equal(staged.kid, before.kid, 'not signing with the new key yet');
    t.clock.advance(KEY_ACTIVATION_MS);
    // New tokens use the new key (the keyring re-reads the table by itself when the key activates).
    const after = await session();
    assert.equal(after.kid, created.kid);
    await verifyOffline(after.jwt, jwks1);
    assert.equal(
      (
        await t.b
          .db('tokens')
          .where({ jti: decodeJwt(after.jwt).jti })
          .first()
      ).kid,
      created.kid,
      'the record names the signing kid',
    );

    // Just before publish_until the old key is still out; at publish_until it is gone.
    t.clock.set(old.publishUntil! - 1000);
    await t.b.keys.reload();
    assert.equal((await jwks()).keys.length, 2);
    t.clock.set(old.publishUntil!);
    await t.b.keys.reload();
    const jwks2 = await jwks();
    assert.deepEqual(
      jwks2.keys.map((k) => k.kid),
      [created.kid],
    );
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
    t.clock.advance(KEYRING_RELOAD_MS + 1); // past the keyring's reload interval: published, not yet signing
    assert.ok(
      (await jwks()).keys.some((k) => k.kid === created.kid),
      'the new key is published before it signs',
    );
    assert.equal((await session()).kid, kidBefore);
    t.clock.advance(KEY_ACTIVATION_MS - KEYRING_RELOAD_MS);
    const s = await session();
    assert.equal(s.kid, created.kid);
    assert.ok(
      (await jwks()).keys.some((k) => k.kid === kidBefore),
      'the previous key is still published',
    );
  });

  it('a replica whose keys are older than a rotation still accepts a token signed with the new key (it re-reads on an unknown kid)', async () => {
    await t.b.keys.reload(); // this broker's view, taken just before the rotation
    const created = await rotateSigningKey(t.b.db, keyDir(), t.b.config.keyAlg, t.clock, 15 * 60_000);
    // Another replica whose clock runs ahead (beyond the activation delay) already signs with the new key.
    const other = await Keyring.load(t.b.db, keyDir(), new ManualClock(t.clock.now() + KEY_ACTIVATION_MS + 1));
    assert.equal(other.active().kid, created.kid);
    const mine = await session();
    const claims = decodeJwt(mine.jwt) as Record<string, unknown>;
    const { jwt } = await signAccessToken(other, { ...claims, jti: `${String(claims.jti)}-other` } as never);
    assert.equal(decodeProtectedHeader(jwt).kid, created.kid);
    const claimsOut = await verifySignature(t.b, jwt, 'invalid_token');
    assert.equal(claimsOut.client_id, agent.id, 'verified after re-reading the key table');
    // Garbage kids do not make it re-read more than once a second.
    let reads = 0;
    const count = () => reads++;
    t.b.db.on('query', count);
    for (let i = 0; i < 5; i++) await assert.rejects(verifySignature(t.b, forgeWithKid(jwt, `nope-${i}`), 'invalid_token'));
    t.b.db.off('query', count);
    assert.ok(reads <= 1, `${reads} key-table reads for 5 unknown kids`);
  });

  it('processes starting at once on a fresh database end with one active key and one key file (the database holds at most one)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-keys-race-'));
    const url = `sqlite://${join(dir, 'db.sqlite')}`;
    const first = openDb(url);
    await migrate(first);
    // Five "processes": each its own connection to the same file, each finding no key.
    const dbs = [first, ...Array.from({ length: 4 }, () => openDb(url))];
    try {
      await Promise.all(dbs.map((db) => ensureSigningKey(db, join(dir, 'keys'), 'EdDSA', t.clock)));
      const active = (await listKeys(first)).filter((k) => k.status === 'active');
      assert.equal(active.length, 1);
      assert.deepEqual(
        readdirSync(join(dir, 'keys')).filter((f) => f.endsWith('.jwk.json')),
        [`${active[0].kid}.jwk.json`],
        'the losers removed their private files',
      );
      await assert.rejects(
        first('signing_keys').insert({ kid: 'dup', alg: 'EdDSA', public_jwk: '{}', status: 'active', created_at: 1, retired_at: null, publish_until: null }),
      );
    } finally {
      for (const db of dbs) await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('each key creation and rotation is in the audit chain', async () => {
    const rows = await t.b.db('audit').whereIn('event', ['key.create', 'key.rotate']).orderBy('seq');
    assert.deepEqual(
      rows.map((r) => r.event),
      ['key.create', 'key.rotate', 'key.rotate', 'key.rotate'],
    );
    const v = await verifyAudit(t.b.db);
    assert.equal(v.ok, true, JSON.stringify(v));
  });
});
