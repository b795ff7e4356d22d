/**
 * S3Double — a small S3 (path-style) on node:http for the gateway's SigV4 tests: GetObject,
 * HeadObject, PutObject and ListObjectsV2 in S3's wire shapes (bytes, XML, `<Error>` bodies).
 *
 * Every request must be signed (AWS4-HMAC-SHA256, header auth) by credentials it was told about
 * (`addCredentials`, or `trust` to look them up, e.g. in an StsDouble), with the matching
 * `x-amz-security-token`, scoped to its region and `s3`; the signature is checked by the
 * independent verifier in sigv4-verify.ts (node:crypto, no @smithy). It records every request,
 * with who signed it and whether the signature held, so tests assert what the gateway sent.
 */
import type http from 'node:http';
import { createHash, randomUUID } from 'node:crypto';
import { HttpDouble, type NowSource, type RecordedRequestBase } from './http-double.ts';
import { SigV4VerifyError, awsTime, parseAuthorization, verifySignature } from './sigv4-verify.ts';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** ms; absent: never expires. */
  expiresAtMs?: number;
}

export interface S3Object {
  body: Buffer;
  contentType: string;
  etag: string;
  lastModifiedMs: number;
}

export interface S3RecordedRequest extends RecordedRequestBase {
  operation?: 'GetObject' | 'HeadObject' | 'PutObject' | 'ListObjectsV2';
  bucket?: string;
  /** Decoded object key. */
  key?: string;
  /** The access key id of the Authorization header, if any. */
  accessKeyId?: string;
  /** The signature was checked and held. */
  signatureValid: boolean;
  /** Error code answered, if the request failed. */
  errorCode?: string;
}

export interface S3DoubleOptions {
  region?: string;
  /** Allowed difference between x-amz-date and the real clock (default 15 min, as AWS). */
  maxClockSkewMs?: number;
  now?: NowSource;
}

class S3Error extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n';
const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

export class S3Double extends HttpDouble<S3RecordedRequest> {
  readonly region: string;
  maxClockSkewMs: number;
  readonly buckets = new Map<string, Map<string, S3Object>>();
  #credentials = new Map<string, S3Credentials>();
  #lookups: Array<(accessKeyId: string) => S3Credentials | undefined> = [];

  constructor(opts: S3DoubleOptions = {}) {
    super(opts.now);
    this.region = opts.region ?? 'us-east-1';
    this.maxClockSkewMs = opts.maxClockSkewMs ?? 15 * 60_000;
  }

  /** Credentials whose signatures the double accepts. */
  addCredentials(c: S3Credentials): void {
    this.#credentials.set(c.accessKeyId, c);
  }

  /** Another source of credentials, asked for key ids not added (e.g. what an StsDouble issued). */
  trust(lookup: (accessKeyId: string) => S3Credentials | undefined): void {
    this.#lookups.push(lookup);
  }

  createBucket(bucket: string): void {
    if (!this.buckets.has(bucket)) this.buckets.set(bucket, new Map());
  }

  putObject(bucket: string, key: string, body: Buffer | string, contentType = 'application/octet-stream'): S3Object {
    this.createBucket(bucket);
    const bytes = Buffer.from(body);
    const obj = { body: bytes, contentType, etag: `"${createHash('md5').update(bytes).digest('hex')}"`, lastModifiedMs: this.now() };
    this.buckets.get(bucket)!.set(key, obj);
    return obj;
  }

  getObject(bucket: string, key: string): S3Object | undefined {
    return this.buckets.get(bucket)?.get(key);
  }

  protected record(base: RecordedRequestBase, req: http.IncomingMessage): S3RecordedRequest {
    const raw = (req.url ?? '/').split('?')[0];
    const slash = raw.indexOf('/', 1);
    let bucket: string | undefined;
    let key: string | undefined;
    try {
      bucket = decodeURIComponent(slash < 0 ? raw.slice(1) : raw.slice(1, slash)) || undefined;
      key = slash < 0 || slash === raw.length - 1 ? undefined : decodeURIComponent(raw.slice(slash + 1));
    } catch {
      /* left undefined: answered as a bad request */
    }
    const accessKeyId = /Credential=([^/,\s]+)\//.exec(String(req.headers.authorization ?? ''))?.[1];
    return { ...base, bucket, key, accessKeyId, signatureValid: false };
  }

  protected async handle(rec: S3RecordedRequest, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const requestId = randomUUID().replace(/-/g, '').slice(0, 16).toUpperCase();
    const common = { 'x-amz-request-id': requestId, date: new Date().toUTCString(), server: 'AmazonS3' };
    try {
      this.#authenticate(rec, req);
      rec.signatureValid = true;
      this.#dispatch(rec, res, common);
    } catch (err) {
      const e = err instanceof S3Error ? err : new S3Error(500, 'InternalError', err instanceof Error ? err.message : String(err));
      rec.errorCode = e.code;
      const xml = `${XML_HEAD}<Error><Code>${xmlEscape(e.code)}</Code><Message>${xmlEscape(e.message)}</Message><RequestId>${requestId}</RequestId></Error>`;
      res.writeHead(e.status, { ...common, 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
      res.end(req.method === 'HEAD' ? undefined : xml);
    }
  }

  #authenticate(rec: S3RecordedRequest, req: http.IncomingMessage): void {
    if (/[?&]X-Amz-Signature=/i.test(req.url ?? '')) throw new S3Error(501, 'NotImplemented', 'The double accepts header authentication only.');
    let auth;
    try {
      auth = parseAuthorization(req.headers.authorization);
    } catch (e) {
      throw e instanceof SigV4VerifyError
        ? new S3Error(
            e.code === 'MissingAuthenticationToken' ? 403 : 400,
            e.code === 'MissingAuthenticationToken' ? 'AccessDenied' : 'AuthorizationHeaderMalformed',
            e.message,
          )
        : e;
    }
    const creds = this.#credentials.get(auth.accessKeyId) ?? this.#lookups.map((f) => f(auth.accessKeyId)).find(Boolean);
    if (!creds) throw new S3Error(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
    if (creds.sessionToken !== undefined && req.headers['x-amz-security-token'] !== creds.sessionToken)
      throw new S3Error(400, 'InvalidToken', 'The provided token is malformed or otherwise invalid.');
    if (creds.expiresAtMs !== undefined && creds.expiresAtMs <= this.now()) throw new S3Error(400, 'ExpiredToken', 'The provided token has expired.');
    if (auth.service !== 's3' || auth.region !== this.region)
      throw new S3Error(
        400,
        'AuthorizationHeaderMalformed',
        `The authorization header is malformed; the region '${auth.region}' is wrong; expecting '${this.region}'`,
      );
    const payload = String(req.headers['x-amz-content-sha256'] ?? '');
    if (!payload) throw new S3Error(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
    if (payload.startsWith('STREAMING-')) throw new S3Error(501, 'NotImplemented', 'The double does not accept aws-chunked uploads.');
    try {
      verifySignature(
        auth,
        { method: rec.method, url: req.url ?? '/', headers: req.headers, body: rec.bodyBytes },
        { secret: creds.secretAccessKey, now: Date.now(), maxClockSkewMs: this.maxClockSkewMs, uriEscapePath: false },
      );
    } catch (e) {
      throw e instanceof SigV4VerifyError ? new S3Error(e.status, e.code, e.message) : e;
    }
  }

  #dispatch(rec: S3RecordedRequest, res: http.ServerResponse, common: Record<string, string>): void {
    if (!rec.bucket) throw new S3Error(400, 'InvalidRequest', 'The double serves path-style bucket requests only.');
    const bucket = this.buckets.get(rec.bucket);
    if (!bucket) throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist');
    if (rec.key === undefined) {
      if (rec.method !== 'GET' || rec.query['list-type'] !== '2') throw new S3Error(501, 'NotImplemented', 'Only ListObjectsV2 is served on a bucket.');
      rec.operation = 'ListObjectsV2';
      const prefix = rec.query.prefix ?? '';
      const keys = [...bucket.keys()].filter((k) => k.startsWith(prefix)).sort();
      const contents = keys
        .map((k) => {
          const o = bucket.get(k)!;
          return `<Contents><Key>${xmlEscape(k)}</Key><LastModified>${awsTime(o.lastModifiedMs)}</LastModified><ETag>${xmlEscape(o.etag)}</ETag><Size>${o.body.length}</Size><StorageClass>STANDARD</StorageClass></Contents>`;
        })
        .join('');
      const xml = `${XML_HEAD}<ListBucketResult xmlns="${S3_NS}"><Name>${xmlEscape(rec.bucket)}</Name><Prefix>${xmlEscape(prefix)}</Prefix><KeyCount>${keys.length}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>${contents}</ListBucketResult>`;
      res.writeHead(200, { ...common, 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) }).end(xml);
      return;
    }
    if (rec.method === 'PUT') {
      rec.operation = 'PutObject';
      const o = this.putObject(rec.bucket, rec.key, rec.bodyBytes, String(rec.headers['content-type'] ?? 'application/octet-stream'));
      res.writeHead(200, { ...common, etag: o.etag, 'content-length': 0 }).end();
      return;
    }
    if (rec.method !== 'GET' && rec.method !== 'HEAD') throw new S3Error(501, 'NotImplemented', `The double does not serve ${rec.method} on objects.`);
    rec.operation = rec.method === 'GET' ? 'GetObject' : 'HeadObject';
    const o = bucket.get(rec.key);
    if (!o) throw new S3Error(404, 'NoSuchKey', 'The specified key does not exist.');
    res.writeHead(200, {
      ...common,
      'content-type': o.contentType,
      'content-length': o.body.length,
      etag: o.etag,
      'last-modified': new Date(o.lastModifiedMs).toUTCString(),
      'accept-ranges': 'bytes',
    });
    res.end(rec.method === 'GET' ? o.body : undefined);
  }
}
