/**
 * How the MCP front door answers a refusal: always a JSON-RPC error (with the request's id when it
 * is known), and the HTTP status and challenge MCP's authorization asks for — 401 with
 * `WWW-Authenticate: Bearer resource_metadata="…"` (RFC 9728), 403 with `error="insufficient_scope"`
 * and the scope a step-up would need. A refusal of a well-formed request by policy (a tool or
 * argument the policy does not grant, a changed pin) is an HTTP 200 carrying the JSON-RPC error, as
 * MCP answers any failed request; nothing about it is forwarded.
 */
import type { ServerResponse } from 'node:http';
import { CordonError } from '../../errors.ts';
import { MCP_ROUTE_PREFIX, mcpMetadataUrl, mcpResourceUrl } from '../../policy/mcp-resource.ts';
import { RPC, rpcErrorBody, RpcRefusal, type JsonRpcId } from './wire.ts';

/** The MCP front door: `ANY /mcp/{upstream}`. */
export const MCP_PREFIX = MCP_ROUTE_PREFIX;
export { mcpResourceUrl };

const quoted = (s: string): string => `"${s.replace(/["\\\r\n]/g, ' ')}"`;

/** The WWW-Authenticate challenge for a refusal, if it has one. */
export function mcpChallenge(gatewayUrl: string, upstream: string, e: CordonError): string | undefined {
  const metadata = `resource_metadata=${quoted(mcpMetadataUrl(gatewayUrl, upstream))}`;
  if (e.code === 'invalid_dpop_proof') return `DPoP error="invalid_dpop_proof", error_description=${quoted(e.description)}, ${metadata}`;
  if (e.status === 401)
    return e.reason === 'token_missing' ? `Bearer ${metadata}` : `Bearer error="invalid_token", error_description=${quoted(e.description)}, ${metadata}`;
  if (e.code === 'insufficient_scope') {
    const scope = e.auditParams?.scope_needed;
    return `Bearer error="insufficient_scope"${typeof scope === 'string' ? `, scope=${quoted(scope)}` : ''}, ${metadata}`;
  }
  return undefined;
}

/** The HTTP status for a refusal: a policy's "no" to a well-formed request is a JSON-RPC error in a 200. */
function statusOf(e: CordonError, id: JsonRpcId | null): number {
  if (id !== null && (e.code === 'access_denied' || rpcCodeOf(e) === RPC.INVALID_PARAMS)) return 200;
  return e.status;
}

function rpcCodeOf(e: CordonError): number {
  if (e instanceof RpcRefusal) return e.rpcCode;
  if (e.reason === 'tool_args_malformed') return RPC.INVALID_PARAMS;
  if (e.status >= 500) return -32603;
  if (e.reason === 'mcp_session_unknown') return -32001;
  return RPC.REFUSED;
}

/** Answers `e` on `res` (or cuts the connection if an answer had begun). */
export function replyMcp(
  res: ServerResponse,
  gatewayUrl: string,
  upstream: string | undefined,
  e: CordonError,
  id: JsonRpcId | null,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store', ...extra };
  const challenge = upstream !== undefined ? mcpChallenge(gatewayUrl, upstream, e) : undefined;
  if (challenge) headers['www-authenticate'] = challenge;
  if (e.status === 429 && typeof e.auditParams?.retry_after === 'number') headers['retry-after'] = String(e.auditParams.retry_after);
  const body = rpcErrorBody(id, rpcCodeOf(e), e.description, { error: e.code, reason: e.reason });
  headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(statusOf(e, id), headers);
  res.end(body);
}
