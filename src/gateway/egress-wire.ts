/**
 * The forward proxy's wire details: reading the token from Proxy-Authorization, dropping hop-by-hop
 * headers, and writing a refusal as JSON, either as a raw HTTP/1.1 response on a CONNECT socket or
 * through a ServerResponse. Error descriptions are CordonError's (safe to show); anything else is
 * answered as a bare server_error so no internal message reaches the client.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { CordonError, isCordonError } from '../errors.ts';
import { endSocket } from './replies.ts';

/** Both schemes a client may use; Basic exists because most HTTP(S)_PROXY clients only speak it. */
export const PROXY_AUTHENTICATE = ['Bearer realm="cordon"', 'Basic realm="cordon"'];

const BASIC_USER = 'cordon';

/** The Cordon token in `Proxy-Authorization: Bearer <token>` or `Basic base64(cordon:<token>)`. */
export function proxyToken(header: string | undefined): string {
  if (header === undefined || header.trim() === '') throw new CordonError('invalid_token', 'proxy authentication required', { reason: 'no_token' });
  const m = /^(Bearer|Basic)[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i.exec(header);
  if (!m) throw new CordonError('invalid_token', 'Proxy-Authorization must be Bearer <token> or Basic cordon:<token>', { reason: 'malformed_token' });
  if (m[1].toLowerCase() === 'bearer') return m[2];
  const decoded = Buffer.from(m[2], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const token = decoded.slice(colon + 1);
  if (colon < 0 || decoded.slice(0, colon) !== BASIC_USER || token === '')
    throw new CordonError('invalid_token', `Basic proxy credentials must be the user "${BASIC_USER}" and the token as password`, { reason: 'malformed_token' });
  return token;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'expect', // Node's server already answered 100-continue
]);

/** Headers to pass on: without hop-by-hop ones, those the Connection header names, and Host (the caller sets it). */
export function endToEndHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** A refusal as status, JSON body and extra headers. invalid_token becomes 407 with Proxy-Authenticate. */
export function refusal(err: unknown): { error: CordonError; status: number; headers: Record<string, string | string[]>; body: string } {
  const error = isCordonError(err) ? err : new CordonError('server_error', 'the proxy failed', { reason: 'internal', cause: err });
  const proxyAuth = error.code === 'invalid_token';
  const status = proxyAuth ? 407 : error.status;
  const headers: Record<string, string | string[]> = { 'content-type': 'application/json', 'cache-control': 'no-store' };
  if (proxyAuth) headers['proxy-authenticate'] = PROXY_AUTHENTICATE;
  return { error, status, headers, body: JSON.stringify(error.toJSON()) };
}

/** A complete HTTP/1.1 response on a CONNECT socket, then the socket is ended. Returns the status written. */
export function writeConnectRefusal(socket: Duplex, err: unknown): { error: CordonError; status: number } {
  const r = refusal(err);
  endSocket(socket, r.status, r.headers, r.body);
  return { error: r.error, status: r.status };
}

/** The refusal through a ServerResponse; once headers are out, the response can only be cut. */
export function writeResponseRefusal(res: ServerResponse, err: unknown): { error: CordonError; status: number } {
  const r = refusal(err);
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return { error: r.error, status: res.headersSent ? res.statusCode : 0 };
  }
  res.writeHead(r.status, { ...r.headers, 'content-length': Buffer.byteLength(r.body), connection: 'close' });
  res.end(r.body);
  return { error: r.error, status: r.status };
}
