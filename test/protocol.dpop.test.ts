import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { DpopKey } from '../src/sdk/dpop.ts';
import { DpopProofError, athOf, normalizeHtu, verifyDpopProof, type DpopProofFault } from '../src/protocol/dpop.ts';

describe('protocol: the one DPoP proof verifier (pure; the broker and the middleware both use it)', () => {
  const NOW = Date.UTC(2026, 0, 1);
  const iat = Math.floor(NOW / 1000);
  const check = { method: 'POST', url: 'https://broker.example/token', nowMs: NOW, windowSec: 60, skewSec: 10 };
  let key: DpopKey;
  let pair: Awaited<ReturnType<typeof generateKeyPair>>;
  before(async () => {
    pair = await generateKeyPair('ES256');
    key = await DpopKey.fromKeyPair(pair, 'ES256');
  });
  const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
    new SignJWT({ htm: 'POST', htu: check.url, jti: randomBytes(12).toString('base64url'), iat, ...claims })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk, ...header })
      .sign(pair.privateKey);
  const refused = async (proof: unknown, fault: DpopProofFault, c: Partial<typeof check> & { accessToken?: string } = {}) =>
    assert.rejects(verifyDpopProof(proof, { ...check, ...c }), (e: unknown) => e instanceof DpopProofError && e.fault === fault);

  it('normalises htu per RFC 9449 §4.3: scheme and host case, the default port, no query or fragment', () => {
    assert.equal(normalizeHtu('HTTPS://Broker.EXAMPLE:443/token?x=1#f'), 'https://broker.example/token');
    assert.equal(normalizeHtu('http://broker.example:80/token'), 'http://broker.example/token');
    assert.equal(normalizeHtu('https://broker.example:8443/token'), 'https://broker.example:8443/token');
    assert.equal(normalizeHtu('https://broker.example/Token'), 'https://broker.example/Token', 'the path keeps its case');
    assert.equal(normalizeHtu('not a url'), null);
    assert.equal(normalizeHtu('ftp://broker.example/token'), null);
  });

  it('returns the key thumbprint, jti and iat of a good proof; htu differing only in case and default port passes', async () => {
    const p = await verifyDpopProof(await sign({ htu: 'HTTPS://BROKER.example:443/token', jti: 'abcdefgh12' }), check);
    assert.deepEqual(p, { jkt: key.jkt, jti: 'abcdefgh12', iat });
    assert.equal((await verifyDpopProof(await sign({ ath: athOf('tok') }), { ...check, accessToken: 'tok' })).jkt, key.jkt);
  });

  it('names what is wrong with a bad proof', async () => {
    await refused('garbage', 'malformed');
    await refused(await sign({}, { typ: 'JWT' }), 'typ');
    await refused(
      await new SignJWT({ htm: 'POST', htu: check.url, jti: 'abcdefghijkl', iat })
        .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt' })
        .sign(new Uint8Array(32)),
      'alg',
    );
    await refused(await sign({}, { jwk: await exportJWK((await generateKeyPair('ES256', { extractable: true })).privateKey) }), 'jwk');
    await refused(await sign({}, { jwk: (await DpopKey.generate()).publicJwk }), 'signature');
    await refused(await sign({ htm: 'GET' }), 'htm');
    await refused(await sign({ htu: 'https://broker.example/other' }), 'htu');
    await refused(await sign({ htu: 'https://broker.example:8443/token' }), 'htu');
    await refused(await sign({ iat: iat + 11 }), 'future');
    await refused(await sign({ iat: iat - 71 }), 'stale');
    await refused(await sign({ jti: 'short' }), 'jti');
    await refused(await sign({ ath: athOf('other') }), 'ath', { accessToken: 'tok' });
  });

  it('judges time on the injected now only', async () => {
    const proof = await sign({ iat: iat - 3600 });
    await refused(proof, 'stale');
    assert.equal((await verifyDpopProof(proof, { ...check, nowMs: NOW - 3600 * 1000 })).iat, iat - 3600);
  });
});
