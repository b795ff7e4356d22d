import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { ManualClock } from '../src/clock.ts';
import { gatewayKeySecret, mintGatewayKeys, parseGatewayKeyId, type GatewayKeys } from '../src/keys/gateway-keys.ts';
import { S3Double } from './doubles/s3.ts';
import { parseAuthorization } from './doubles/sigv4-verify.ts';
import { PREFIX, REGION, STS, client, rejection, sdkSign, send, startGateway } from './gateway.sigv4.kit.ts';

describe('gateway SigV4: an S3 SDK signs with gateway keys, the upstream sees the real STS keys', () => {
  const rootKey = randomBytes(32);
  const live = new Set<string>(['jti-live-one', 'jti-live-two']);
  const clock = new ManualClock(Date.now()); // the SDK signs with the wall clock
  const keys = mintGatewayKeys(rootKey, 'jti-live-one');
  let s3: S3Double;
  let gw: Awaited<ReturnType<typeof startGateway>>;

  before(async () => {
    s3 = new S3Double({ region: REGION });
    await s3.start();
    s3.addCredentials(STS);
    s3.putObject('reports', 'q1/summary.csv', 'region,total\neu,42\n', 'text/csv');
    // As the gateway will: the key id names a jti, and only a live token's key has a secret.
    const secretFor = (akid: string): string | undefined => {
      const jti = parseGatewayKeyId(akid);
      return jti !== undefined && live.has(jti) ? gatewayKeySecret(rootKey, akid) : undefined;
    };
    gw = await startGateway(s3.url, secretFor, clock);
  });
  after(async () => {
    await gw?.close();
    await s3?.stop();
  });
  beforeEach(() => {
    s3.reset();
    gw.refusals.length = 0;
    gw.seen.length = 0;
    clock.set(Date.now());
  });

  /** The request reached S3 signed by the real keys, and carries nothing of the gateway keys. */
  function assertResigned(i = 0): void {
    const r = s3.requests[i];
    assert.ok(r, 'the request reached the double');
    assert.equal(r.signatureValid, true, `signature refused: ${r.errorCode}`);
    assert.equal(r.accessKeyId, STS.accessKeyId);
    assert.equal(r.headers['x-amz-security-token'], STS.sessionToken);
    assert.equal(r.headers.host, new URL(s3.url).host, 'signed for the real endpoint');
    const all = JSON.stringify(r.headers);
    assert.ok(!all.includes(keys.accessKeyId) && !all.includes(keys.secretAccessKey), 'nothing of the gateway keys goes upstream');
    assert.ok(!r.path.startsWith(PREFIX), 'the gateway prefix is not forwarded');
  }

  it('GetObject and ListObjectsV2 succeed; S3 sees an UNSIGNED-PAYLOAD request signed with the STS keys', async () => {
    const c = client(gw.url, keys);
    const got = await c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1/summary.csv' }));
    assert.equal(await got.Body!.transformToString(), 'region,total\neu,42\n');
    assert.equal(got.ContentType, 'text/csv');
    assert.equal(gw.seen[0].url, `${PREFIX}/reports/q1/summary.csv?x-id=GetObject`, 'the SDK signed the gateway path');
    assertResigned();
    assert.equal(s3.requests[0].operation, 'GetObject');
    assert.equal(s3.requests[0].headers['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD');
    assert.ok(parseAuthorization(s3.requests[0].headers.authorization).signedHeaders.includes('x-amz-security-token'));

    const list = await c.send(new ListObjectsV2Command({ Bucket: 'reports', Prefix: 'q1/' }));
    assert.deepEqual(
      list.Contents?.map((o) => o.Key),
      ['q1/summary.csv'],
    );
    assertResigned(1);
    assert.deepEqual(s3.requests[1].query, { 'list-type': '2', prefix: 'q1/' });
    c.destroy();
  });

  it('PutObject succeeds; the body is signed by its SHA-256 and the SDK’s own x-amz-* headers are not forwarded', async () => {
    const c = client(gw.url, keys);
    const body = 'weekly report: all green\n';
    await c.send(new PutObjectCommand({ Bucket: 'reports', Key: 'q2/report file.txt', Body: body, ContentType: 'text/plain' }));
    assertResigned();
    const r = s3.requests[0];
    assert.equal(r.operation, 'PutObject');
    assert.equal(r.key, 'q2/report file.txt');
    assert.equal(r.headers['x-amz-content-sha256'], createHash('sha256').update(body).digest('hex'));
    assert.equal(s3.getObject('reports', 'q2/report file.txt')?.body.toString(), body);
    const amz = Object.keys(r.headers).filter((h) => h.startsWith('x-amz-'));
    assert.deepEqual(amz.sort(), ['x-amz-content-sha256', 'x-amz-date', 'x-amz-security-token']);
    c.destroy();
  });

  it('refuses a wrong secret, a stale date, a key of a token that is not live, and a key with another key’s secret; S3 sees none', async () => {
    const cases: Array<[string, GatewayKeys, string]> = [
      ['wrong secret', { accessKeyId: keys.accessKeyId, secretAccessKey: 'x'.repeat(40) }, 'sigv4_bad_signature'],
      ['unknown jti', mintGatewayKeys(rootKey, 'jti-not-live'), 'sigv4_unknown_key'],
      [
        'another jti’s secret',
        { accessKeyId: keys.accessKeyId, secretAccessKey: mintGatewayKeys(rootKey, 'jti-live-two').secretAccessKey },
        'sigv4_bad_signature',
      ],
      [
        'another broker’s secret',
        { accessKeyId: keys.accessKeyId, secretAccessKey: mintGatewayKeys(randomBytes(32), 'jti-live-one').secretAccessKey },
        'sigv4_bad_signature',
      ],
    ];
    for (const [what, k, reason] of cases) {
      const c = client(gw.url, k);
      const r = await rejection(c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1/summary.csv' })));
      assert.equal(r.status, 401, what);
      assert.equal(gw.refusals.at(-1), reason, what);
      c.destroy();
    }
    clock.advance(10 * 60_000);
    const c = client(gw.url, keys);
    assert.equal((await rejection(c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1/summary.csv' })))).status, 401);
    assert.equal(gw.refusals.at(-1), 'sigv4_stale_date');
    c.destroy();
    assert.equal(s3.requests.length, 0, 'nothing reached S3');
  });

  it('a replayed request with a signed header or the path changed is refused (the untouched one passes)', async () => {
    const c = client(gw.url, keys);
    await c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1/summary.csv', Range: 'bytes=0-5' }));
    c.destroy();
    const orig = gw.seen[0];
    const signed = parseAuthorization(String(orig.headers.authorization)).signedHeaders;
    assert.ok(signed.includes('range'));
    s3.reset();
    assert.equal((await send(gw.url, { method: 'GET', path: orig.url, headers: orig.headers })).status, 200, 'untouched replay');
    const tampered = [
      { method: 'GET', path: orig.url, headers: { ...orig.headers, range: 'bytes=0-999' } },
      { method: 'GET', path: orig.url.replace('summary', 'secrets'), headers: orig.headers },
      { method: 'GET', path: orig.url, headers: { ...orig.headers, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } },
      { method: 'DELETE', path: orig.url, headers: orig.headers },
    ];
    for (const t of tampered) {
      const r = await send(gw.url, t);
      assert.equal(r.status, 401, JSON.stringify(t.headers));
      assert.equal(r.body.error, 'invalid_token');
      assert.equal(gw.refusals.at(-1), 'sigv4_bad_signature');
      assert.ok(!JSON.stringify(r.body).includes(String(orig.headers.authorization).slice(-64)), 'the signature is not echoed');
    }
    assert.equal(s3.requests.length, 1, 'only the untouched replay reached S3');
  });

  it('refuses an aws-chunked STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload, a presigned URL and a body that is not the signed one (400/401)', async () => {
    const chunked = await sdkSign(keys, gw.url, {
      method: 'PUT',
      path: `${PREFIX}/reports/up.txt`,
      headers: {
        'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
        'content-encoding': 'aws-chunked',
        'x-amz-decoded-content-length': '5',
        'content-length': '90',
      },
    });
    const body = Buffer.from(`5;chunk-signature=${'0'.repeat(64)}\r\nhello\r\n0;chunk-signature=${'0'.repeat(64)}\r\n\r\n`);
    chunked.headers['content-length'] = String(body.length);
    let r = await send(gw.url, { method: 'PUT', path: chunked.path, headers: chunked.headers, body });
    assert.equal(r.status, 400);
    assert.match(r.body.error_description, /aws-chunked/);
    assert.equal(gw.refusals.at(-1), 'sigv4_streaming_unsupported');

    const u = new URL(gw.url);
    const presigned = await new SignatureV4({ service: 's3', region: REGION, credentials: keys, sha256: Sha256, uriEscapePath: false }).presign(
      new HttpRequest({
        method: 'GET',
        protocol: 'http:',
        hostname: u.hostname,
        port: Number(u.port),
        path: `${PREFIX}/reports/q1/summary.csv`,
        headers: { host: u.host },
      }),
    );
    const qs = new URLSearchParams(presigned.query as Record<string, string>).toString();
    r = await send(gw.url, { method: 'GET', path: `${presigned.path}?${qs}`, headers: { host: u.host } });
    assert.equal(r.status, 400);
    assert.equal(gw.refusals.at(-1), 'sigv4_presigned_unsupported');

    const signedFor = Buffer.from('the body that was signed');
    const put = await sdkSign(keys, gw.url, {
      method: 'PUT',
      path: `${PREFIX}/reports/swap.txt`,
      headers: { 'x-amz-content-sha256': createHash('sha256').update(signedFor).digest('hex'), 'content-length': String(signedFor.length) },
    });
    r = await send(gw.url, { method: 'PUT', path: put.path, headers: put.headers, body: Buffer.from('another body, same size!') });
    assert.equal(r.status, 401);
    assert.equal(gw.refusals.at(-1), 'sigv4_payload_mismatch');
    assert.equal(s3.requests.length, 0, 'nothing reached S3');
  });

  it('an SDK stream upload (aws-chunked with a trailing checksum) gets a 400 saying how to send it; sent as the message advises, it goes through', async () => {
    const streamBody = (): Readable => Readable.from([Buffer.from('streamed '), Buffer.from('report')]);
    let c = client(gw.url, keys);
    const r = await rejection(c.send(new PutObjectCommand({ Bucket: 'reports', Key: 'streamed.txt', Body: streamBody(), ContentLength: 15 })));
    c.destroy();
    assert.equal(r.status, 400);
    assert.equal(gw.refusals.at(-1), 'sigv4_streaming_unsupported');
    assert.match(String(gw.seen[0].headers['x-amz-content-sha256']), /^STREAMING-/);
    assert.equal(s3.requests.length, 0);
    c = new S3Client({
      region: REGION,
      endpoint: `${gw.url}${PREFIX}`,
      forcePathStyle: true,
      credentials: keys,
      maxAttempts: 1,
      requestChecksumCalculation: 'WHEN_REQUIRED',
    });
    await c.send(new PutObjectCommand({ Bucket: 'reports', Key: 'streamed.txt', Body: streamBody(), ContentLength: 15 }));
    c.destroy();
    assert.equal(gw.seen[1].headers['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD');
    assertResigned();
    assert.equal(s3.getObject('reports', 'streamed.txt')?.body.toString(), 'streamed report');
  });

  it('refuses malformed authorization: host or x-amz-date unsigned, a scope date that is not x-amz-date’s, garbage', async () => {
    const ok = await sdkSign(keys, gw.url, {
      method: 'GET',
      path: `${PREFIX}/reports/q1/summary.csv`,
      headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
    });
    const auth = String(ok.headers.authorization);
    const variants = [
      auth.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=x-amz-content-sha256;x-amz-date'),
      auth.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=host;x-amz-content-sha256'),
      auth.replace(/Credential=([^/]+)\/\d{8}/, 'Credential=$1/19990101'),
      'AWS4-HMAC-SHA256 Credential=nonsense',
      auth.replace('Credential=', 'Credential=AKIA/'),
    ];
    for (const a of variants) {
      const r = await send(gw.url, { method: 'GET', path: ok.path, headers: { ...ok.headers, authorization: a } });
      assert.equal(r.status, 401, a);
      assert.equal(gw.refusals.at(-1), 'sigv4_malformed', a);
    }
    assert.equal(s3.requests.length, 0);
  });
});
