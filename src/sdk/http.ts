import { CordonSdkError } from './errors.ts';

/** The part of `fetch` the SDK uses; inject one in tests (or to add a proxy, mTLS, …). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface HttpOptions {
  fetch: FetchLike;
  /** Per request; the whole exchange, body included. */
  timeoutMs: number;
}

/** Answers larger than this are not something the broker sends. */
const MAX_BODY_BYTES = 1024 * 1024;

/** A short, printable excerpt of what came back, for error messages. */
export function snippet(text: string, max = 80): string {
  const s = text
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

const isJsonType = (ct: string | null): boolean => ct !== null && /^application\/([\w.+-]+\+)?json\b/i.test(ct.trim());

export interface JsonAnswer {
  status: number;
  headers: Headers;
  /** Parsed JSON, or null for an empty body (allowed only when `allowEmpty`). */
  body: unknown;
}

/**
 * One HTTP exchange that must end in JSON. Every way it can go wrong becomes a typed error:
 * unreachable → `network`; HTML, truncated or oversized bodies → `bad_response`;
 * an RFC 6749 error object → `oauth` with its `error` and `error_description`.
 */
export async function requestJson(h: HttpOptions, url: string, init: RequestInit, what: string, opts: { allowEmpty?: boolean } = {}): Promise<JsonAnswer> {
  let r: Response;
  let raw: ArrayBuffer;
  const signal = AbortSignal.timeout(h.timeoutMs);
  try {
    r = await h.fetch(url, { ...init, signal, redirect: 'manual' });
    raw = await r.arrayBuffer();
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const why =
      err.name === 'TimeoutError' || err.name === 'AbortError' ? `no answer within ${h.timeoutMs} ms` : (err.cause?.code ?? err.cause?.message ?? err.message);
    throw new CordonSdkError('network', `${what}: could not reach ${originOf(url)} (${why})`, { cause: e });
  }
  if (raw.byteLength > MAX_BODY_BYTES) throw new CordonSdkError('bad_response', `${what}: answer is larger than ${MAX_BODY_BYTES} bytes`, { status: r.status });
  const text = new TextDecoder('utf-8', { fatal: false }).decode(raw);
  const ct = r.headers.get('content-type');
  const ok = r.status >= 200 && r.status < 300;
  if (ok && text.length === 0) {
    if (opts.allowEmpty) return { status: r.status, headers: r.headers, body: null };
    throw new CordonSdkError('bad_response', `${what}: empty answer (status ${r.status})`, { status: r.status });
  }
  let body: unknown;
  let parsed = false;
  if (text.length) {
    try {
      body = JSON.parse(text);
      parsed = true;
    } catch {
      /* handled below */
    }
  }
  if (!ok) {
    const o = body as { error?: unknown; error_description?: unknown } | undefined;
    if (parsed && o && typeof o === 'object' && typeof o.error === 'string') {
      const desc = typeof o.error_description === 'string' ? o.error_description : undefined;
      throw new CordonSdkError('oauth', `${what}: ${o.error}${desc ? `: ${desc}` : ''} (status ${r.status})`, {
        error: o.error,
        error_description: desc,
        status: r.status,
      });
    }
    if (r.status >= 300 && r.status < 400)
      throw new CordonSdkError('bad_response', `${what}: unexpected redirect (status ${r.status}) to ${snippet(r.headers.get('location') ?? '?')}`, {
        status: r.status,
      });
    throw new CordonSdkError(
      'bad_response',
      `${what}: status ${r.status} with ${ct ?? 'no content type'} instead of an OAuth error: ${snippet(text) || '(empty)'}`,
      { status: r.status },
    );
  }
  if (!isJsonType(ct))
    throw new CordonSdkError('bad_response', `${what}: expected JSON, got ${ct ?? 'no content type'} (status ${r.status}): ${snippet(text)}`, {
      status: r.status,
    });
  if (!parsed)
    throw new CordonSdkError('bad_response', `${what}: truncated or malformed JSON (status ${r.status}, ${text.length} bytes): ${snippet(text)}`, {
      status: r.status,
    });
  return { status: r.status, headers: r.headers, body };
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return 'the broker';
  }
}

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
