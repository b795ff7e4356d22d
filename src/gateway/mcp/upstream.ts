/**
 * The upstream side of one MCP exchange: where it goes and with which headers (the caller's that
 * may leave, never its token, and the upstream's credential injected as the policy says), sending
 * it, and — for the requests the gateway makes itself (a `tools/list` to check a pin) — reading
 * the answer to one request out of JSON or an event stream.
 */
import type { IncomingMessage } from 'node:http';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { errors as undiciErrors, request, type Dispatcher } from 'undici';
import type { Attempt } from '../../audit/attempt.ts';
import { CordonError } from '../../errors.ts';
import type { Upstream } from '../../policy/types.ts';
import type { GatewayContext } from '../context.ts';
import { forwardableHeaders, UpstreamError } from '../forward.ts';
import { injectTemplate } from '../inject.ts';
import type { GatewayPrincipal } from '../principal.ts';
import { SseInspector } from './sse.ts';

export interface UpstreamTarget {
  url: URL;
  headers: Record<string, string>;
  credentialId?: string;
}

/** The upstream's URL and headers for this exchange; `session` is the upstream's own Mcp-Session-Id, if any. */
export async function targetFor(
  g: GatewayContext,
  p: GatewayPrincipal,
  upstream: Upstream,
  req: IncomingMessage,
  attempt: Attempt,
  session: string | undefined,
): Promise<UpstreamTarget> {
  const headers = forwardableHeaders(req.headers);
  // The gateway is the upstream's client: the caller's origin means nothing there, and bodies must come back readable.
  for (const h of ['origin', 'referer', 'content-length', 'mcp-session-id']) delete headers[h];
  headers['accept-encoding'] = 'identity';
  if (session !== undefined) headers['mcp-session-id'] = session;
  const url = new URL(upstream.url);
  if (!upstream.credential || !upstream.inject) return { url, headers };
  if ('aws_sigv4' in upstream.inject)
    throw new CordonError('bad_gateway', 'an MCP upstream takes its credential in a header or the query, not a SigV4 signature', {
      reason: 'mcp_inject_unsupported',
    });
  const held = await g.secrets.get(p, upstream.credential, attempt);
  const query = new URLSearchParams(url.search);
  injectTemplate(upstream.inject, held.values, headers, query);
  url.search = query.toString();
  return { url, headers, credentialId: held.credentialId };
}

const TIMEOUTS = [undiciErrors.HeadersTimeoutError, undiciErrors.BodyTimeoutError, undiciErrors.ConnectTimeoutError];

/** An upstream's failure as the caller sees it (502/504), or the revocation that cut it. */
export function upstreamFailure(e: unknown, signal: AbortSignal): CordonError {
  if (e instanceof CordonError) return e;
  if (signal.aborted)
    return new UpstreamError('invalid_token', 'the session was revoked (or the token expired) during the call', { reason: 'session_revoked_midcall' });
  if (TIMEOUTS.some((t) => e instanceof t))
    return new UpstreamError('bad_gateway', 'the upstream did not answer in time', { reason: 'upstream_timeout', status: 504 });
  return new UpstreamError('bad_gateway', 'the upstream could not be reached or broke the connection', { reason: 'upstream_failed' });
}

export interface Sent {
  answer: Dispatcher.ResponseData;
  /** Seconds until the response headers. */
  upstreamSeconds: number;
}

export async function send(g: GatewayContext, t: UpstreamTarget, method: string, body: Buffer | null, timeoutMs: number, signal: AbortSignal): Promise<Sent> {
  const started = performance.now();
  try {
    const answer = await request(t.url, {
      method: method as 'POST',
      headers: t.headers,
      body,
      signal,
      dispatcher: g.dispatcher,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    return { answer, upstreamSeconds: (performance.now() - started) / 1000 };
  } catch (e) {
    throw upstreamFailure(e, signal);
  }
}

/** The largest JSON answer the gateway reads whole (it must, to look into it). */
export const MAX_JSON_ANSWER_BYTES = 16 * 1024 * 1024;

/** Drops an answer's body without reading it (an undici body destroyed without a listener would throw its AbortError). */
export function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

/** Reads a body whole, up to `cap` bytes. */
export async function readAnswer(body: Dispatcher.ResponseData['body'], cap: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += (c as Buffer).length;
    if (n > cap) {
      discard(body);
      throw new UpstreamError('bad_gateway', `the upstream's answer is larger than the gateway reads (${cap} bytes)`, { reason: 'upstream_answer_too_large' });
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** The media type of a content-type header, lowercase, without parameters. */
export const mediaType = (v: unknown): string =>
  String(v ?? '')
    .split(';')[0]
    .trim()
    .toLowerCase();

/**
 * A request the gateway sends itself, in the caller's exchange (its session, protocol version and
 * credential): resolves to the response with the request's id, or undefined when none came.
 */
export async function ask(
  g: GatewayContext,
  t: UpstreamTarget,
  message: { id: string; method: string; params?: Record<string, unknown> },
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Record<string, unknown> | undefined> {
  const headers: Record<string, string> = { ...t.headers, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  for (const h of Object.keys(headers)) if (h === 'mcp-name' || h.startsWith('mcp-param-') || h === 'last-event-id') delete headers[h];
  if (headers['mcp-method'] !== undefined) headers['mcp-method'] = message.method;
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', ...message }));
  const { answer } = await send(g, { ...t, headers }, 'POST', body, timeoutMs, signal);
  if (answer.statusCode !== 200) {
    await answer.body.dump();
    return undefined;
  }
  let found: Record<string, unknown> | undefined;
  const mine = (m: unknown): void => {
    if (m !== null && typeof m === 'object' && (m as Record<string, unknown>).id === message.id && !('method' in m)) found = m as Record<string, unknown>;
  };
  try {
    if (mediaType(answer.headers['content-type']) === 'text/event-stream') {
      const sink = new Writable({ write: (_c, _e, done) => (found ? done(new Error('answered')) : done()) });
      await pipeline(answer.body, new SseInspector((m) => void mine(m)), sink).catch((e: Error) => {
        if (!found) throw e;
      });
    } else {
      mine(JSON.parse((await readAnswer(answer.body, MAX_JSON_ANSWER_BYTES)).toString('utf8')));
    }
  } catch (e) {
    if (e instanceof CordonError) throw e;
    throw upstreamFailure(e, signal);
  }
  return found;
}
