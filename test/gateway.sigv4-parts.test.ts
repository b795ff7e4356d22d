import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { ManualClock } from '../src/clock.ts';
import { gatewayKeySecret, gatewaySecretMatches, mintGatewayKeys, parseGatewayKeyId } from '../src/keys/gateway-keys.ts';
import { hasSigV4, resign, verifyIncoming } from '../src/gateway/sigv4.ts';
import { parseAuthorization, verifySignature } from './doubles/sigv4-verify.ts';
import { REGION, STS } from './gateway.sigv4.kit.ts';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

describe('gateway SigV4 building blocks: gateway keys, resign, verifyIncoming', () => {
  const rootKey = randomBytes(32);

  it('gateway keys: the key id encodes the jti (round trip), looks like an AWS key id, and its secret is recomputable', () => {
    for (const jti of ['a', 'jti-live-one', 'A_b-9', 'Zz'.repeat(32), 'x'.repeat(22)]) {
      const k = mintGatewayKeys(rootKey, jti);
      assert.match(k.accessKeyId, /^CGW[A-Z2-7]+$/);
      assert.ok(k.accessKeyId.length <= 128);
      assert.equal(parseGatewayKeyId(k.accessKeyId), jti);
      assert.equal(k.secretAccessKey.length, 40);
      assert.deepEqual(mintGatewayKeys(rootKey, jti), k, 'deterministic: nothing to store');
      assert.equal(gatewayKeySecret(rootKey, k.accessKeyId), k.secretAccessKey);
      assert.ok(gatewaySecretMatches(rootKey, k.accessKeyId, k.secretAccessKey));
      assert.ok(!gatewaySecretMatches(randomBytes(32), k.accessKeyId, k.secretAccessKey), 'another broker’s key makes other secrets');
    }
    assert.throws(() => mintGatewayKeys(rootKey, 'has/slash'));
    assert.throws(() => mintGatewayKeys(rootKey, ''));
  });

  it('gateway keys: parse refuses ids that are not canonical encodings of a well-formed jti; a forged secret never matches', () => {
    const k = mintGatewayKeys(rootKey, 'jti-live-one');
    const base = k.accessKeyId.slice(3);
    for (const bad of [
      `AKIA${base}`,
      k.accessKeyId.toLowerCase(),
      `CGW${base}A`,
      'CGW',
      `CGW${base.slice(0, -1)}9`,
      `CGW/${base}`,
      'CGWEAQCAIBA',
      `CGW${'A'.repeat(104)}`,
    ])
      assert.equal(parseGatewayKeyId(bad), undefined, bad);
    // A trailing-bit variant decodes to the same bytes but is not the canonical id.
    const last = base.at(-1)!;
    const sibling = `CGW${base.slice(0, -1)}${BASE32[BASE32.indexOf(last) ^ 1]}`;
    assert.equal(parseGatewayKeyId(sibling), undefined);
    assert.ok(!gatewaySecretMatches(rootKey, k.accessKeyId, `${k.secretAccessKey.slice(0, -1)}A`));
    assert.ok(!gatewaySecretMatches(rootKey, k.accessKeyId, ''));
  });

  it('resign drops the caller’s credentials and hop-by-hop headers, and its signature holds for an independent verifier', async () => {
    const body = Buffer.from('{"TableName":"t"}');
    const headers = await resign(
      {
        method: 'POST',
        url: '/some%20path/?b=2&a=x%2By&a=1',
        headers: {
          authorization: 'AWS4-HMAC-SHA256 Credential=CGWX/…',
          'x-amz-date': '20000101T000000Z',
          'x-amz-security-token': 'agent-supplied',
          'x-amz-target': 'DynamoDB_20120810.GetItem',
          cookie: 'c=1',
          connection: 'keep-alive, x-hop',
          'x-hop': '1',
          'transfer-encoding': 'chunked',
          'content-type': 'application/x-amz-json-1.0',
        },
        body,
      },
      STS,
      { service: 'dynamodb', region: REGION, host: 'dynamodb.us-east-1.amazonaws.com', now: Date.now() },
    );
    for (const h of ['cookie', 'connection', 'x-hop', 'transfer-encoding', 'x-amz-target']) assert.equal(headers[h], undefined, h);
    assert.equal(headers.host, 'dynamodb.us-east-1.amazonaws.com');
    assert.equal(headers['x-amz-security-token'], STS.sessionToken);
    assert.equal(headers['content-length'], String(body.length));
    assert.notEqual(headers['x-amz-date'], '20000101T000000Z');
    const auth = parseAuthorization(headers.authorization);
    assert.equal(auth.accessKeyId, STS.accessKeyId);
    assert.equal(auth.service, 'dynamodb');
    verifySignature(
      auth,
      { method: 'POST', url: '/some%20path/?b=2&a=x%2By&a=1', headers, body },
      { secret: STS.secretAccessKey, now: Date.now(), maxClockSkewMs: 60_000 },
    );
  });

  it('verifyIncoming accepts a non-S3 request without x-amz-content-sha256 (the body is the payload); hasSigV4 tells SigV4 from Bearer', async () => {
    const k = mintGatewayKeys(rootKey, 'jti-x');
    const body = Buffer.from('Action=GetCallerIdentity&Version=2011-06-15');
    const signer = new SignatureV4({ service: 'sts', region: REGION, credentials: k, sha256: Sha256, applyChecksum: false });
    const signed = await signer.sign(
      new HttpRequest({
        method: 'POST',
        protocol: 'https:',
        hostname: 'gw',
        path: '/u/sts/',
        headers: { host: 'gw', 'content-type': 'application/x-www-form-urlencoded' },
        body,
      }),
    );
    assert.equal(signed.headers['x-amz-content-sha256'], undefined);
    const req = { method: 'POST', url: '/u/sts/', headers: signed.headers, body };
    assert.ok(hasSigV4(req));
    assert.ok(!hasSigV4({ url: '/u/x', headers: { authorization: 'Bearer abc' } }));
    const clock = new ManualClock(Date.now());
    const v = await verifyIncoming(req, () => k.secretAccessKey, clock);
    assert.equal(v.service, 'sts');
    assert.equal(v.accessKeyId, k.accessKeyId);
    await assert.rejects(
      verifyIncoming({ ...req, body: Buffer.from('Action=AssumeRole') }, () => k.secretAccessKey, clock),
      { reason: 'sigv4_bad_signature' },
    );
  });
});
