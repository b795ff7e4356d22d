/**
 * `sigv4Bench()` (and `node --import tsx bench/sigv4.ts [--n=10000]`): what SigV4 costs the gateway per call, one core,
 * in-process. Times resign() (the real-keys signature every aws_sigv4 call pays) on an S3
 * GetObject as the AWS SDK sends it and on a PutObject with a 64 KiB buffered body, and
 * verifyIncoming() on the GetObject the SDK signed with gateway keys. Prints median and p99 (µs).
 * Target (issue 11): re-signing adds ≤ 0.5 ms median.
 */
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { systemClock } from '../../src/clock.ts';
import { gatewayKeySecret, mintGatewayKeys, parseGatewayKeyId } from '../../src/keys/gateway-keys.ts';
import { resign, verifyIncoming, type SigV4Request } from '../../src/gateway/sigv4.ts';

const STS = {
  accessKeyId: 'ASIAREALSTSKEY000001',
  secretAccessKey: 'real/sts+secret-access-key-0123456789ab',
  sessionToken: `IQoJb3JpZ2luX2Vj${'x'.repeat(600)}`,
};
const target = { service: 's3', region: 'us-east-1', host: 's3.us-east-1.amazonaws.com' };
const rootKey = randomBytes(32);
const keys = mintGatewayKeys(rootKey, 'bench-jti-0123456789ab');

const sdkHeaders = {
  host: 'gateway.internal:8081',
  'x-amz-user-agent': 'aws-sdk-js/3.1174.0',
  'user-agent': 'aws-sdk-js/3.1174.0 ua/2.1 os/linux lang/js md/nodejs#20 api/s3#3.1174.0',
  'amz-sdk-invocation-id': 'c92aab9b-8a33-4ced-9fe4-57009b65facb',
  'amz-sdk-request': 'attempt=1; max=3',
  'x-amz-checksum-mode': 'ENABLED',
};
const get: SigV4Request = { method: 'GET', url: '/reports/q1/summary.csv?x-id=GetObject', headers: sdkHeaders };
const put: SigV4Request = {
  method: 'PUT',
  url: '/reports/q2/upload.bin?x-id=PutObject',
  headers: { ...sdkHeaders, 'content-type': 'application/octet-stream', 'content-length': '65536' },
  body: randomBytes(65536),
};

async function time(n: number, label: string, fn: () => Promise<unknown>, print: boolean): Promise<number> {
  for (let i = 0; i < Math.min(1000, n); i++) await fn(); // warm-up (JIT, signing-key cache)
  const us: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    us.push((performance.now() - t) * 1000);
  }
  us.sort((a, b) => a - b);
  const at = (q: number): string => us[Math.min(us.length - 1, Math.floor(q * us.length))].toFixed(1);
  if (print) console.log(`${label.padEnd(44)} median ${at(0.5).padStart(7)} µs   p99 ${at(0.99).padStart(7)} µs   (n=${n})`);
  return us[Math.floor(us.length / 2)] / 1000;
}

/** Medians (ms) of resign() on a GetObject and a 64 KiB PutObject, and of verifyIncoming() on a GetObject signed with gateway keys. */
export async function sigv4Bench(n = 5000, print = false): Promise<{ medianMs: number; putMedianMs: number; verifyMedianMs: number }> {
  // The incoming GetObject as the SDK signs it with the gateway keys (signed once; verified n times).
  const signedGet = await new SignatureV4({ service: 's3', region: 'us-east-1', credentials: keys, sha256: Sha256, uriEscapePath: false }).sign(
    new HttpRequest({
      method: 'GET',
      protocol: 'http:',
      hostname: 'gateway.internal',
      path: '/u/reports/reports/q1/summary.csv',
      query: { 'x-id': 'GetObject' },
      headers: { ...sdkHeaders, 'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' },
    }),
  );
  const incoming: SigV4Request = { method: 'GET', url: '/u/reports/reports/q1/summary.csv?x-id=GetObject', headers: signedGet.headers, body: Buffer.alloc(0) };
  const secretFor = (akid: string): string | undefined => (parseGatewayKeyId(akid) ? gatewayKeySecret(rootKey, akid) : undefined);
  const medianMs = await time(n, 'resign GetObject (UNSIGNED-PAYLOAD)', () => resign(get, STS, target), print);
  const putMedianMs = await time(n, 'resign PutObject (64 KiB body hashed)', () => resign(put, STS, target), print);
  const verifyMedianMs = await time(n, 'verifyIncoming GetObject (gateway keys)', () => verifyIncoming(incoming, secretFor, systemClock), print);
  return { medianMs, putMedianMs, verifyMedianMs };
}
