/**
 * Fixture for the gateway SigV4 suites (not a test file): the gateway's SigV4 path in miniature, an
 * S3 client pointed at it with gateway keys, and raw senders for requests an SDK would not make.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { S3Client } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import type { Clock } from '../src/clock.ts';
import { CordonError } from '../src/errors.ts';
import type { GatewayKeys } from '../src/keys/gateway-keys.ts';
import { resign, verifyIncoming, type AwsCredentials, type SecretLookup } from '../src/gateway/sigv4.ts';

export const REGION = 'us-east-1';
export const PREFIX = '/u/reports';
/** The session's real STS keys: only the gateway holds them. */
export const STS: Required<AwsCredentials> = {
  accessKeyId: 'ASIAREALSTSKEY000001',
  secretAccessKey: 'real/sts+secret-access-key-0123456789ab',
  sessionToken: 'IQoJb3JpZ2luX2VjEJr-real-session-token',
};

export interface Incoming {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export type TestGateway = Awaited<ReturnType<typeof startGateway>>;

/**
 * The gateway's SigV4 path in miniature: buffer, verifyIncoming with `secretFor` (the gateway maps
 * the key id to its jti and answers a secret only while that token is live), strip the
 * `/u/reports` prefix, resign with the STS keys, forward to `upstream`. A refusal answers the
 * CordonError as JSON and records its reason.
 */
export async function startGateway(upstream: string, secretFor: SecretLookup, clock: Clock) {
  const up = new URL(upstream);
  const refusals: string[] = [];
  const seen: Incoming[] = [];
  const server = http.createServer((req, res) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const incoming = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks) };
      seen.push(incoming);
      try {
        await verifyIncoming(incoming, secretFor, clock);
        const upstreamUrl = incoming.url.slice(PREFIX.length);
        const hasBody = incoming.method !== 'GET' && incoming.method !== 'HEAD';
        const headers = await resign({ ...incoming, url: upstreamUrl, body: hasBody ? incoming.body : undefined }, STS, {
          service: 's3',
          region: REGION,
          host: up.host,
        });
        const fwd = http.request({ host: up.hostname, port: up.port, method: incoming.method, path: upstreamUrl, headers }, (ur) => {
          res.writeHead(ur.statusCode!, ur.headers);
          ur.pipe(res);
        });
        fwd.end(hasBody ? incoming.body : undefined);
      } catch (e) {
        if (!(e instanceof CordonError)) throw e;
        refusals.push(e.reason);
        res.writeHead(e.status, { 'content-type': 'application/json' }).end(JSON.stringify(e.toJSON()));
      }
    })();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, refusals, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

export const client = (url: string, keys: GatewayKeys): S3Client =>
  new S3Client({ region: REGION, endpoint: `${url}${PREFIX}`, forcePathStyle: true, credentials: keys, maxAttempts: 1 });

/** Send a raw request to the gateway; answers status and parsed JSON body. */
export function send(url: string, r: { method: string; path: string; headers: Record<string, string | string[] | undefined>; body?: Buffer }) {
  return new Promise<{ status: number; body: any }>((resolve, reject) => {
    const u = new URL(url);
    const headers = Object.fromEntries(Object.entries(r.headers).filter(([, v]) => v !== undefined)) as http.OutgoingHttpHeaders;
    const req = http.request({ host: u.hostname, port: u.port, method: r.method, path: r.path, headers }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: /json/.test(String(res.headers['content-type'])) ? JSON.parse(text) : text }));
    });
    req.on('error', reject);
    req.end(r.body);
  });
}

/** Sign with @smithy as an SDK would (for requests the S3 client will not make). */
export async function sdkSign(
  keys: GatewayKeys,
  url: string,
  r: { method: string; path: string; headers: Record<string, string>; query?: Record<string, string> },
) {
  const u = new URL(url);
  const signer = new SignatureV4({ service: 's3', region: REGION, credentials: keys, sha256: Sha256, uriEscapePath: false });
  const req = new HttpRequest({
    method: r.method,
    protocol: 'http:',
    hostname: u.hostname,
    port: Number(u.port),
    path: r.path,
    query: r.query,
    headers: { host: u.host, ...r.headers },
  });
  return signer.sign(req);
}

export async function rejection(p: Promise<unknown>): Promise<{ status?: number }> {
  try {
    await p;
  } catch (e) {
    return { status: (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode };
  }
  assert.fail('expected the call to be refused');
}
