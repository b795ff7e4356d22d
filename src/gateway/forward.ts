/**
 * Forwarding: one call to the upstream with undici, both bodies streamed (SSE included) with
 * back-pressure, the request body capped, and the upstream's failures turned into 502/504.
 * Which headers leave (hop-by-hop and credentials of the caller never do) is decided here once.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { Agent, type Dispatcher, errors as undiciErrors, request } from 'undici';
import { CordonError } from '../errors.ts';

/** Never forwarded to an upstream: framing, the caller's credentials, and AWS auth (the gateway signs). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'expect']);
const CALLER_CREDENTIALS = new Set(['authorization', 'proxy-authorization', 'dpop', 'cookie']);
/** Never relayed back: framing (Node frames the reply itself). */
const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate']);

/** The caller's headers that may go upstream (lowercase names, single values). */
export function forwardableHeaders(h: IncomingHttpHeaders): Record<string, string> {
  const named = new Set(
    String(h.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || HOP_BY_HOP.has(k) || CALLER_CREDENTIALS.has(k) || k.startsWith('x-amz-') || named.has(k)) continue;
    out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/** The upstream's response headers that may go back to the caller (framing is Node's own). */
export function relayHeaders(h: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const named = new Set(
    String(h.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !RESPONSE_HOP_BY_HOP.has(k) && !named.has(k)) out[k] = v;
  return out;
}

export interface ForwardRequest {
  url: URL;
  method: string;
  headers: Record<string, string>;
  /** The caller's request (its body is streamed), or a buffered body, or nothing. */
  body: IncomingMessage | Buffer | null;
  maxBodyBytes: number;
  timeoutMs: number;
  signal: AbortSignal;
  dispatcher: Dispatcher;
}

export interface ForwardResult {
  status: number;
  bytesIn: number;
  bytesOut: number;
  /** From sending the call until the upstream's response headers. */
  upstreamSeconds: number;
}

/** Answers up to this size, of known length, are sent in one write. */
const SMALL_ANSWER_BYTES = 64 * 1024;

/**
 * Pipes the upstream's body to the caller with back-pressure, counting bytes. A plain pipe rather
 * than stream.pipeline: no abort machinery per call on the hot path. If either side fails the
 * other is cut, so the caller sees a truncated body, never a complete-looking one.
 */
function relay(body: Readable, res: ServerResponse, out: { n: number }, small: boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    // A small answer of known length leaves in one write with its headers (end() uncorks): two packets cost a
    // delayed-ACK round trip on every call. Streams and large bodies flow as they come.
    if (small) res.cork();
    body.on('data', (c: Buffer) => (out.n += c.length));
    body.once('error', () => {
      res.destroy();
      resolve();
    });
    res.once('finish', () => resolve());
    res.once('close', () => {
      if (!body.readableEnded) body.destroy();
      resolve();
    });
    body.pipe(res);
  });
}

/** Thrown before anything was relayed: the front door answers it. After the reply has begun, the connection is cut instead. */
export class UpstreamError extends CordonError {}

/** Reads the whole body, refusing (413) past `cap` bytes. */
export async function readBody(req: IncomingMessage, cap: number): Promise<Buffer> {
  if (Number(req.headers['content-length'] ?? 0) > cap)
    throw new CordonError('invalid_request', `request body is larger than ${cap} bytes`, { reason: 'body_too_large', status: 413 });
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > cap) throw new CordonError('invalid_request', `request body is larger than ${cap} bytes`, { reason: 'body_too_large', status: 413 });
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Counts bytes and refuses past the cap (the caller may send chunked bodies of any length). */
function capped(max: number, counter: { n: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      counter.n += chunk.length;
      if (counter.n > max) done(new CordonError('invalid_request', `request body is larger than ${max} bytes`, { reason: 'body_too_large', status: 413 }));
      else done(null, chunk);
    },
  });
}

const TIMEOUTS = [undiciErrors.HeadersTimeoutError, undiciErrors.BodyTimeoutError, undiciErrors.ConnectTimeoutError];

function upstreamFailure(e: unknown, signal: AbortSignal): CordonError {
  if (e instanceof CordonError) return e;
  if (signal.aborted) return new UpstreamError('invalid_token', 'the session was revoked during the call', { reason: 'session_revoked_midcall' });
  if (TIMEOUTS.some((t) => e instanceof t))
    return new UpstreamError('bad_gateway', 'the upstream did not answer in time', { reason: 'upstream_timeout', status: 504 });
  return new UpstreamError('bad_gateway', 'the upstream could not be reached or broke the connection', { reason: 'upstream_failed' });
}

/** The gateway's connection pool for every upstream (keep-alive matters for latency); one per gateway, closed with it. */
export const upstreamPool = (): Dispatcher => new Agent({ connections: 128, keepAliveTimeout: 10_000, connect: { timeout: 10_000 } });

/** Sends the call and relays the answer to `res`. */
export async function forward(req: ForwardRequest, res: ServerResponse): Promise<ForwardResult> {
  const sentIn = { n: 0 };
  let body: Readable | Buffer | null = null;
  if (Buffer.isBuffer(req.body)) {
    sentIn.n = req.body.length;
    body = req.body;
  } else if (req.body) {
    const declared = Number(req.body.headers['content-length'] ?? 0);
    if (declared > req.maxBodyBytes)
      throw new CordonError('invalid_request', `request body is larger than ${req.maxBodyBytes} bytes`, { reason: 'body_too_large', status: 413 });
    if (req.body.headers['content-length'] !== undefined || req.body.headers['transfer-encoding'] !== undefined) {
      const counter = capped(req.maxBodyBytes, sentIn);
      req.body.on('error', (e) => counter.destroy(e));
      body = req.body.pipe(counter);
    }
  }
  let answer: Awaited<ReturnType<typeof request>>;
  const sent = performance.now();
  try {
    answer = await request(req.url, {
      method: req.method as 'GET',
      headers: req.headers,
      body,
      signal: req.signal,
      dispatcher: req.dispatcher,
      headersTimeout: req.timeoutMs,
      bodyTimeout: req.timeoutMs,
    });
  } catch (e) {
    const cause = (e as { cause?: unknown }).cause;
    throw upstreamFailure(cause instanceof CordonError ? cause : e, req.signal);
  }
  const upstreamSeconds = (performance.now() - sent) / 1000;
  const headers = relayHeaders(answer.headers);
  res.writeHead(answer.statusCode, headers);
  // An event stream's headers go at once (its first event may be long in coming); other replies send them with the body, in one write.
  if (/^text\/event-stream/i.test(String(headers['content-type'] ?? ''))) res.flushHeaders();
  const out = { n: 0 };
  const length = Number(headers['content-length'] ?? NaN);
  await relay(answer.body, res, out, length <= SMALL_ANSWER_BYTES);
  return { status: answer.statusCode, bytesIn: sentIn.n, bytesOut: out.n, upstreamSeconds };
}
