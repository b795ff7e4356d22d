/**
 * The gateway's one error mapper: a CordonError becomes a JSON reply with the status and the
 * challenge headers RFC 6750 asks for. Nothing else is ever sent on an error, and never a stack.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { CordonError } from '../errors.ts';

const quoted = (s: string): string => `"${s.replace(/["\\\r\n]/g, ' ')}"`;

export function asCordonError(e: unknown): CordonError {
  return e instanceof CordonError ? e : new CordonError('server_error', 'the gateway failed unexpectedly', { reason: 'gateway_error', cause: e });
}

/** The JSON body and headers for a refusal (shared by the reverse proxy, the forward proxy and MCP). */
export function refusalReply(e: CordonError): { status: number; headers: Record<string, string>; body: string } {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' };
  // DESIGN: a call no rule or scope allows is access_denied; the challenge still says which scope (RFC 6750 §3.1).
  const code = e.code === 'insufficient_scope' ? 'access_denied' : e.code;
  if (e.code === 'invalid_dpop_proof') {
    headers['www-authenticate'] = `DPoP realm="cordon", error="invalid_dpop_proof", error_description=${quoted(e.description)}`;
  } else if (e.status === 401) {
    headers['www-authenticate'] =
      e.reason === 'token_missing' ? 'Bearer realm="cordon"' : `Bearer realm="cordon", error="invalid_token", error_description=${quoted(e.description)}`;
  } else if (e.code === 'insufficient_scope') {
    const scope = /grant (\S+)/.exec(e.description)?.[1];
    headers['www-authenticate'] = `Bearer realm="cordon", error="insufficient_scope"${scope ? `, scope=${quoted(scope)}` : ''}`;
  }
  if (e.status === 429 && typeof e.auditParams?.retry_after === 'number') headers['retry-after'] = String(e.auditParams.retry_after);
  return { status: e.status, headers, body: JSON.stringify({ error: code, error_description: e.description }) };
}

/** Answers a refusal on `res` if nothing was sent yet; otherwise cuts the connection (a half reply must not look whole). */
export function reply(res: ServerResponse, e: CordonError, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const r = refusalReply(e);
  res.writeHead(r.status, { ...r.headers, ...extra, 'content-length': String(Buffer.byteLength(r.body)) });
  res.end(r.body);
}

/** A whole HTTP/1.1 answer on a raw socket (CONNECT, upgrades), then the end of the connection. */
export function endSocket(socket: Duplex, status: number, headers: Record<string, string | string[]>, body: string): void {
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`];
  for (const [name, value] of Object.entries(headers)) for (const v of [value].flat()) lines.push(`${name}: ${v}`);
  lines.push(`content-length: ${Buffer.byteLength(body)}`, 'connection: close', '', body);
  if (socket.writable) socket.end(lines.join('\r\n'));
  else socket.destroy();
}

/** A refusal on a raw socket. */
export function refuseOnSocket(socket: Duplex, e: CordonError): void {
  const r = refusalReply(e);
  endSocket(socket, r.status, r.headers, r.body);
}
