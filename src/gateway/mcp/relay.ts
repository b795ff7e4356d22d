/**
 * The upstream's answer back to the caller. JSON answers are read whole and event streams event by
 * event, so every message can be inspected (lists filtered, the call's answer noted); a message
 * the gateway does not change leaves exactly as it came. The upstream's `Mcp-Session-Id` goes back
 * bound to the caller (session-id.ts); its challenges and cookies never do: the gateway, not the
 * caller, is the upstream's client, and an upstream refusing the gateway's credential is a 502.
 */
import type { ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { relayHeaders, UpstreamError } from '../forward.ts';
import { inspectServerMessage, type InspectContext } from './inspect.ts';
import { SseInspector } from './sse.ts';
import { discard, MAX_JSON_ANSWER_BYTES, mediaType, readAnswer, type Sent } from './upstream.ts';

export interface Relayed {
  status: number;
  bytesOut: number;
  /** The answer was cut before it ended (revocation, timeout, the caller or upstream hanging up). */
  cut: boolean;
}

/** Counts what leaves. */
const counter = (n: { bytes: number }): Transform =>
  new Transform({
    transform(chunk: Buffer | string, _enc, done) {
      n.bytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      done(null, chunk);
    },
  });

export async function relayAnswer(sent: Sent, res: ServerResponse, ctx: InspectContext, bindSession: (id: string) => string | undefined): Promise<Relayed> {
  const { answer } = sent;
  const status = answer.statusCode;
  if (status === 401 || status === 403) {
    await answer.body.dump();
    throw new UpstreamError('bad_gateway', `the upstream refused the gateway's credential (HTTP ${status})`, { reason: 'upstream_refused_credential' });
  }
  const headers = relayHeaders(answer.headers);
  for (const h of ['www-authenticate', 'set-cookie', 'content-length']) delete headers[h];
  const encoding = String(headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding !== 'identity') {
    discard(answer.body);
    throw new UpstreamError('bad_gateway', `the upstream answered with content-encoding ${encoding.slice(0, 40)}, which the gateway cannot inspect`, {
      reason: 'upstream_encoded',
    });
  }
  const upstreamSession = headers['mcp-session-id'];
  if (upstreamSession !== undefined) {
    const bound = typeof upstreamSession === 'string' ? bindSession(upstreamSession) : undefined;
    if (bound === undefined) {
      discard(answer.body);
      throw new UpstreamError('bad_gateway', 'the upstream sent an invalid Mcp-Session-Id', { reason: 'upstream_bad_session_id' });
    }
    headers['mcp-session-id'] = bound;
  }
  const type = mediaType(headers['content-type']);
  if (type === 'application/json') return relayJson(sent, res, ctx, headers);
  const n = { bytes: 0 };
  res.writeHead(status, headers);
  if (type === 'text/event-stream') {
    // The first event may be long in coming: the caller learns the stream is open now.
    res.flushHeaders();
    try {
      await pipeline(answer.body, new SseInspector((m) => inspectServerMessage(ctx, m)), counter(n), res);
      return { status, bytesOut: n.bytes, cut: false };
    } catch {
      res.destroy();
      return { status, bytesOut: n.bytes, cut: true };
    }
  }
  try {
    await pipeline(answer.body, counter(n), res);
    return { status, bytesOut: n.bytes, cut: false };
  } catch {
    res.destroy();
    return { status, bytesOut: n.bytes, cut: true };
  }
}

async function relayJson(sent: Sent, res: ServerResponse, ctx: InspectContext, headers: Record<string, string | string[]>): Promise<Relayed> {
  const status = sent.answer.statusCode;
  const raw = await readAnswer(sent.answer.body, MAX_JSON_ANSWER_BYTES);
  let out: Buffer | string = raw;
  let parsed: unknown;
  try {
    // An empty body (a 202 to a notification that still names JSON) holds nothing to look into.
    parsed = raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
  } catch {
    // A client cannot read it either; but a success the gateway could not look into does not pass.
    if (status >= 200 && status < 300) throw new UpstreamError('bad_gateway', 'the upstream answered with malformed JSON', { reason: 'upstream_bad_json' });
    parsed = undefined;
  }
  if (parsed !== undefined) {
    if (Array.isArray(parsed)) {
      let changed = false;
      const each = [];
      for (const m of parsed) {
        const r = await inspectServerMessage(ctx, m);
        changed ||= r !== undefined;
        each.push(r ?? m);
      }
      if (changed) out = JSON.stringify(each);
    } else {
      const r = await inspectServerMessage(ctx, parsed);
      if (r !== undefined) out = JSON.stringify(r);
    }
  }
  const length = Buffer.byteLength(out);
  res.writeHead(status, { ...headers, 'content-length': String(length) });
  res.end(out);
  return { status, bytesOut: length, cut: false };
}
