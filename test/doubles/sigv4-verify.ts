/**
 * An independent SigV4 (AWS4-HMAC-SHA256) verifier for the AWS doubles, written from AWS's
 * specification with node:crypto only (no @smithy code), so a signature made by Cordon's signer is
 * checked by a second implementation, as AWS would check it:
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
 *
 * Errors carry AWS's status and code; each double turns them into its own wire format.
 */
import type http from 'node:http';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export class SigV4VerifyError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface ParsedAuthorization {
  accessKeyId: string;
  scopeDate: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

export interface SignedRequest {
  method: string;
  /** The request target as received (`req.url`): path and query, percent-encoded. */
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface VerifyOptions {
  secret: string;
  /** The verifier's clock, ms (the SDK signs with the real clock). */
  now: number;
  maxClockSkewMs: number;
  /** S3 signs the path as sent; every other service normalises it and encodes it again (default). */
  uriEscapePath?: boolean;
}

const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();
export const sha256hex = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
/** RFC 3986 unreserved characters stay; everything else is %XX (upper case). */
export const uriEscape = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
export const awsTime = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

export function parseAuthorization(authz: string | undefined): ParsedAuthorization {
  if (!authz) throw new SigV4VerifyError(403, 'MissingAuthenticationToken', 'Request is missing Authentication Token');
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})$/.exec(
      authz,
    );
  if (!m)
    throw new SigV4VerifyError(
      400,
      'IncompleteSignature',
      `Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization=${authz}`,
    );
  return { accessKeyId: m[1], scopeDate: m[2], region: m[3], service: m[4], signedHeaders: m[5].split(';'), signature: m[6] };
}

function canonicalPath(path: string, uriEscapePath: boolean): string {
  if (!uriEscapePath) return path;
  const segments: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(seg);
  }
  const norm = `/${segments.join('/')}${segments.length && path.endsWith('/') ? '/' : ''}`;
  return uriEscape(norm).replace(/%2F/g, '/');
}

/** Query pairs decoded (no `+` for space: SigV4 clients percent-encode), re-encoded, sorted by name then value. */
function canonicalQuery(query: string): string {
  return query
    .split('&')
    .filter(Boolean)
    .map((pair) => {
      const eq = pair.indexOf('=');
      const k = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
      const v = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1));
      return [uriEscape(k), uriEscape(v)] as const;
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

/** Checks the signature of `req` made with `opts.secret`; throws a SigV4VerifyError as AWS would answer. */
export function verifySignature(auth: ParsedAuthorization, req: SignedRequest, opts: VerifyOptions): void {
  const signed = auth.signedHeaders;
  if (!signed.includes('host'))
    throw new SigV4VerifyError(400, 'IncompleteSignature', "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  if (!/^\d{8}T\d{6}Z$/.test(amzDate) || !signed.includes('x-amz-date'))
    throw new SigV4VerifyError(400, 'IncompleteSignature', "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
  if (amzDate.slice(0, 8) !== auth.scopeDate)
    throw new SigV4VerifyError(
      403,
      'SignatureDoesNotMatch',
      `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${auth.scopeDate}' != '${amzDate.slice(0, 8)}', from '${amzDate}'.`,
    );
  const d = amzDate;
  const signedAt = Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8), +d.slice(9, 11), +d.slice(11, 13), +d.slice(13, 15));
  if (Math.abs(opts.now - signedAt) > opts.maxClockSkewMs)
    throw new SigV4VerifyError(
      403,
      'SignatureDoesNotMatch',
      `Signature expired: ${amzDate} is now earlier than ${awsTime(opts.now - opts.maxClockSkewMs).replace(/[-:]/g, '')}`,
    );

  const declared = req.headers['x-amz-content-sha256'];
  if (typeof declared === 'string' && /^[0-9a-f]{64}$/.test(declared) && declared !== sha256hex(req.body))
    throw new SigV4VerifyError(400, 'XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed.");
  const payloadHash = typeof declared === 'string' ? declared : sha256hex(req.body);

  const canonicalHeaders = signed
    .map((h) => {
      const v = req.headers[h];
      const value = Array.isArray(v) ? v.join(',') : (v ?? '');
      return `${h}:${String(value)
        .replace(/[\r\n]/g, ' ')
        .replace(/[ \t]+/g, ' ')
        .trim()}\n`;
    })
    .join('');
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const canonicalRequest = [
    req.method,
    canonicalPath(path, opts.uriEscapePath ?? true),
    canonicalQuery(q < 0 ? '' : req.url.slice(q + 1)),
    canonicalHeaders,
    signed.join(';'),
    payloadHash,
  ].join('\n');
  const scope = `${auth.scopeDate}/${auth.region}/${auth.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonicalRequest)].join('\n');
  const kDate = hmac(`AWS4${opts.secret}`, auth.scopeDate);
  const kSigning = hmac(hmac(hmac(kDate, auth.region), auth.service), 'aws4_request');
  const expected = hmac(kSigning, stringToSign);
  const got = Buffer.from(auth.signature, 'hex');
  if (got.length !== expected.length || !timingSafeEqual(got, expected))
    throw new SigV4VerifyError(
      403,
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
    );
}
