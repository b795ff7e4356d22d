/**
 * AWS SigV4 at the gateway: check the signature an AWS SDK made with gateway keys, then sign the
 * same call again with the session's real STS keys for the real endpoint.
 *
 * Both directions use @smithy/signature-v4 (the SDK's own signer), so the canonical request is
 * built exactly as the client built it. Only header authentication is accepted: a presigned URL is
 * a bearer capability that ends up in logs and histories, so query-string signatures are refused.
 * `aws-chunked` (STREAMING-*) uploads are refused too: their chunk signatures would need the
 * gateway key all the way through the body, and the gateway re-signs whole bodies.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import type { Clock } from '../clock.ts';
import { CordonError } from '../errors.ts';

export type HeaderMap = Record<string, string | string[] | undefined>;

export interface SigV4Request {
  method: string;
  /** Path and query exactly as on the wire (percent-encoded), e.g. `/u/reports/bucket/key?list-type=2`. */
  url: string;
  /** Lower-case names, as node:http parses them. */
  headers: HeaderMap;
  /** The buffered body, when there is one. */
  body?: Uint8Array;
}

export interface VerifiedSigV4 {
  accessKeyId: string;
  region: string;
  service: string;
  /** x-amz-date, ms. */
  signedAt: number;
  /** `UNSIGNED-PAYLOAD` or the lower-case hex SHA-256 the client signed (checked here when `body` was given; else see checkPayload). */
  payloadHash: string;
}

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface SigningTarget {
  service: string;
  region: string;
  /** The real endpoint's host (and port, if not the default), e.g. `s3.us-east-1.amazonaws.com`. */
  host: string;
  /** Signing time, ms; default now. The real endpoint checks it against its own clock. */
  now?: number;
}

/** The secret of a gateway access key id, or undefined when the id names no live token. */
export type SecretLookup = (accessKeyId: string) => string | undefined | Promise<string | undefined>;

export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
/** How far x-amz-date may be from the gateway's clock (AWS allows 15 minutes; a replay window this short is enough for an SDK). */
export const MAX_SIGV4_SKEW_MS = 5 * 60_000;

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([A-Za-z0-9]{1,128})\/(\d{8})\/([a-z0-9-]{1,32})\/([a-z0-9-]{1,32})\/aws4_request,\s*SignedHeaders=([a-z0-9;_.-]{1,2048}),\s*Signature=([0-9a-f]{64})$/;
const AMZ_DATE_RE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const PRESIGN_PARAMS = new Set(['x-amz-algorithm', 'x-amz-credential', 'x-amz-signature']);
/** Never forwarded: credentials of the caller and hop-by-hop fields (the body is sent buffered, with its length). */
const DROPPED = new Set([
  'authorization',
  'proxy-authorization',
  'dpop',
  'cookie',
  'host',
  'content-length',
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'date',
]);

const malformed = (what: string): CordonError => new CordonError('invalid_token', `SigV4 authorization is malformed: ${what}`, { reason: 'sigv4_malformed' });
const badSignature = (): CordonError =>
  new CordonError('invalid_token', 'the SigV4 signature does not match: sign with the gateway keys Cordon issued for this token', {
    reason: 'sigv4_bad_signature',
  });

const sha256hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');
const headerValue = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(',') : v);

/** Does this request carry a SigV4 signature (header or query)? The gateway then takes this path instead of the Bearer one. */
export function hasSigV4(req: Pick<SigV4Request, 'url' | 'headers'>): boolean {
  if (headerValue(req.headers.authorization)?.startsWith('AWS4-')) return true;
  const q = req.url.indexOf('?');
  return q >= 0 && /(?:^|&)x-amz-(?:signature|credential|algorithm)=/i.test(req.url.slice(q + 1));
}

/** Path (as sent) and decoded query of a request target. */
function splitUrl(url: string): { path: string; query: Record<string, string | string[]> } {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  if (!path.startsWith('/')) throw malformed('the request target must be a path');
  const query: Record<string, string | string[]> = {};
  if (q >= 0)
    for (const pair of url.slice(q + 1).split('&')) {
      if (!pair) continue;
      const eq = pair.indexOf('=');
      let k: string, v: string;
      try {
        k = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
        v = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1));
      } catch {
        throw malformed('the query string is not valid percent-encoding');
      }
      if (k === '__proto__') throw malformed('a query parameter name is not allowed');
      const prev = query[k];
      query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
  return { path, query };
}

/** The chunked-upload markers: such a body carries per-chunk signatures the gateway cannot re-sign. */
function refuseStreaming(headers: HeaderMap, payload: string | undefined): void {
  const encodings = (headerValue(headers['content-encoding']) ?? '').toLowerCase();
  if (payload?.startsWith('STREAMING-') || encodings.includes('aws-chunked') || headers['x-amz-decoded-content-length'] !== undefined)
    throw new CordonError(
      'invalid_request',
      "aws-chunked (STREAMING-*) uploads are not supported through the gateway: send the body in one piece (give the AWS SDK a Buffer or string body, or set requestChecksumCalculation: 'WHEN_REQUIRED')",
      { reason: 'sigv4_streaming_unsupported' },
    );
}

function signer(service: string, region: string, creds: AwsCredentials, applyChecksum: boolean): SignatureV4 {
  // S3 signs the path as sent; every other service signs it normalised and encoded once more.
  return new SignatureV4({ service, region, credentials: creds, sha256: Sha256, uriEscapePath: service !== 's3', applyChecksum });
}

/**
 * Checks an incoming SigV4 request signed with gateway keys: header authentication only, `host`
 * and `x-amz-date` signed, x-amz-date within ±5 minutes of `clock`, no aws-chunked payload, and the
 * signature recomputed over exactly the SignedHeaders. Throws CordonError (`invalid_token`, 401,
 * reasons sigv4_malformed | sigv4_stale_date | sigv4_unknown_key | sigv4_bad_signature |
 * sigv4_payload_mismatch; `invalid_request`, 400, for presigned URLs and chunked uploads). The
 * signature and the secret never appear in an error.
 */
export async function verifyIncoming(request: SigV4Request, secretFor: SecretLookup, clock: Clock): Promise<VerifiedSigV4> {
  const { path, query } = splitUrl(request.url);
  if (Object.keys(query).some((k) => PRESIGN_PARAMS.has(k.toLowerCase())))
    throw new CordonError('invalid_request', 'presigned URLs (query-string SigV4) are not accepted at the gateway: sign with the Authorization header', {
      reason: 'sigv4_presigned_unsupported',
    });
  const auth = request.headers.authorization;
  const m = typeof auth === 'string' ? AUTH_RE.exec(auth) : null;
  if (!m) throw malformed('expected one header "AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=…, Signature=…"');
  const [, accessKeyId, scopeDate, region, service, signedList, signature] = m;
  const signed = signedList.split(';');
  if (!signed.includes('host')) throw malformed('host must be signed');
  if (!signed.includes('x-amz-date')) throw malformed('x-amz-date must be signed');
  for (const h of ['authorization', 'date']) if (signed.includes(h)) throw malformed(`${h} must not be signed`);
  for (const h of signed)
    if (h === '__proto__' || !Object.hasOwn(request.headers, h) || request.headers[h] === undefined) throw malformed(`signed header ${h} is missing`);

  const amzDate = headerValue(request.headers['x-amz-date']) ?? '';
  const d = AMZ_DATE_RE.exec(amzDate);
  const signedAt = d ? Date.UTC(+d[1], +d[2] - 1, +d[3], +d[4], +d[5], +d[6]) : NaN;
  if (!d || new Date(signedAt).toISOString().replace(/[-:]|\.\d{3}/g, '') !== amzDate) throw malformed('x-amz-date must be YYYYMMDDTHHMMSSZ');
  if (amzDate.slice(0, 8) !== scopeDate) throw malformed("the credential scope's date is not x-amz-date's");
  if (Math.abs(clock.now() - signedAt) > MAX_SIGV4_SKEW_MS)
    throw new CordonError('invalid_token', "x-amz-date is more than 5 minutes away from the gateway's clock: sign again with the current time", {
      reason: 'sigv4_stale_date',
    });

  const declared = headerValue(request.headers['x-amz-content-sha256']);
  refuseStreaming(request.headers, declared);
  if (declared !== undefined && declared !== UNSIGNED_PAYLOAD && !/^[0-9a-f]{64}$/.test(declared))
    throw malformed('x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a lower-case hex SHA-256');

  const secret = await secretFor(accessKeyId);
  if (secret === undefined)
    throw new CordonError('invalid_token', 'the access key id is not a live gateway key: ask /credentials for gateway keys with a live token', {
      reason: 'sigv4_unknown_key',
    });

  const headers: Record<string, string> = {};
  for (const h of signed) headers[h] = headerValue(request.headers[h])!;
  const toCheck = new HttpRequest({
    method: request.method,
    protocol: 'https:',
    hostname: headers.host,
    path,
    query,
    headers,
    // Without x-amz-content-sha256 (services other than S3) the signed payload is the body itself.
    body: declared === undefined ? (request.body ?? new Uint8Array(0)) : undefined,
  });
  const expected = await signer(service, region, { accessKeyId, secretAccessKey: secret }, false).sign(toCheck, {
    signingDate: new Date(signedAt),
    signableHeaders: new Set(signed),
  });
  const want = /SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(String(expected.headers.authorization));
  const same = want !== null && want[1] === signedList && timingSafeEqual(Buffer.from(want[2], 'hex'), Buffer.from(signature, 'hex'));
  if (!same) throw badSignature();

  const verified: VerifiedSigV4 = {
    accessKeyId,
    region,
    service,
    signedAt,
    payloadHash: declared ?? sha256hex(request.body ?? new Uint8Array(0)),
  };
  if (request.body !== undefined) checkPayload(verified, request.body);
  return verified;
}

/** The buffered body is the one the client signed (nothing to check for UNSIGNED-PAYLOAD). Constant time. */
export function checkPayload(verified: VerifiedSigV4, body: Uint8Array): void {
  if (verified.payloadHash === UNSIGNED_PAYLOAD) return;
  const got = createHash('sha256').update(body).digest();
  if (!timingSafeEqual(got, Buffer.from(verified.payloadHash, 'hex')))
    throw new CordonError('invalid_token', 'the body is not the one the SigV4 signature covers (x-amz-content-sha256 differs)', {
      reason: 'sigv4_payload_mismatch',
    });
}

/**
 * Signs a call for the real endpoint with real (STS) keys. Drops every incoming `x-amz-*`,
 * `authorization` and hop-by-hop header, sets `host` to `target.host`, signs the payload as the
 * SHA-256 of `request.body` when the body was buffered (S3 without a buffered body:
 * UNSIGNED-PAYLOAD; other services: the body is taken as empty), adds `x-amz-security-token`.
 * `request.url` is the upstream path and query, percent-encoded. Returns the headers to send.
 */
export async function resign(request: SigV4Request, creds: AwsCredentials, target: SigningTarget): Promise<Record<string, string>> {
  refuseStreaming(request.headers, headerValue(request.headers['x-amz-content-sha256']));
  const { path, query } = splitUrl(request.url);
  const hopByHop = new Set((headerValue(request.headers.connection) ?? '').toLowerCase().split(/\s*,\s*/));
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    const h = name.toLowerCase();
    if (value === undefined || DROPPED.has(h) || hopByHop.has(h) || h.startsWith('x-amz-') || h.startsWith('proxy-')) continue;
    headers[h] = Array.isArray(value) ? value.join(', ') : value;
  }
  headers.host = target.host;
  const body = request.body;
  if (body !== undefined && (body.length > 0 || request.headers['content-length'] !== undefined)) headers['content-length'] = String(body.length);
  headers['x-amz-content-sha256'] = body !== undefined ? sha256hex(body) : target.service === 's3' ? UNSIGNED_PAYLOAD : sha256hex(new Uint8Array(0));
  const signed = await signer(target.service, target.region, creds, true).sign(
    new HttpRequest({ method: request.method, protocol: 'https:', hostname: target.host, path, query, headers }),
    { signingDate: new Date(target.now ?? Date.now()) },
  );
  return signed.headers;
}
