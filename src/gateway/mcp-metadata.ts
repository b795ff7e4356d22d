/**
 * RFC 9728 protected-resource metadata for each MCP upstream:
 * `GET /.well-known/oauth-protected-resource/mcp/{upstream}` says which resource the upstream is
 * (`{gatewayUrl}/mcp/{upstream}`, the `resource` to ask /token for), who issues its tokens (the
 * broker) and which scopes reach it. An MCP client finds it through the `resource_metadata` of the
 * gateway's 401 challenge. Public, like the broker's discovery document: it names only what any
 * policy already publishes to its agents (upstream and tool names), never a credential.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Attempt } from '../audit/attempt.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { CordonError } from '../errors.ts';
import { MCP_METADATA_PREFIX, mcpMetadataUrl, mcpResourceUrl } from '../policy/mcp-resource.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { GW_PREFIX } from '../policy/scopes.ts';
import { DPOP_ALGS } from '../protocol/constants.ts';
import type { GatewayContext } from './context.ts';
import { reply } from './replies.ts';

export { MCP_METADATA_PREFIX, mcpMetadataUrl };

export interface ProtectedResourceMetadata {
  resource: string;
  authorization_servers: string[];
  scopes_supported: string[];
  bearer_methods_supported: string[];
  resource_name: string;
  dpop_signing_alg_values_supported: string[];
}

/** The metadata of `upstream` when some loaded policy defines it as kind mcp; undefined otherwise. */
export function protectedResourceMetadata(g: GatewayContext, upstream: string): ProtectedResourceMetadata | undefined {
  const definers = g.b.policies.list().filter((p) => Object.hasOwn(p.upstreams, upstream) && p.upstreams[upstream].kind === 'mcp');
  if (!definers.length) return undefined;
  // Every policy defining it may grant other tools: the scopes are their union (the session's root policy decides at the call).
  const tools = [...new Set(definers.flatMap((p) => p.upstreams[upstream].tools ?? []))].sort();
  return {
    resource: mcpResourceUrl(g.url, upstream),
    authorization_servers: [g.b.config.issuer],
    scopes_supported: [`${GW_PREFIX}${upstream}`, ...tools.map((t) => `${GW_PREFIX}${upstream}/${t}`)],
    bearer_methods_supported: ['header'],
    resource_name: `MCP upstream ${upstream} through the Cordon gateway`,
    dpop_signing_alg_values_supported: DPOP_ALGS,
  };
}

export async function handleMcpMetadata(g: GatewayContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const upstream = (req.url ?? '').split('?')[0].slice(MCP_METADATA_PREFIX.length);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const e = new CordonError('invalid_request', 'protected-resource metadata is read with GET', { reason: 'method_not_allowed', status: 405 });
    reply(res, e, { allow: 'GET, HEAD' });
    g.audit.call('gateway.call', new Attempt('gateway.call', clientAddressOf(req.socket.remoteAddress)).note({ path: MCP_METADATA_PREFIX }), 'deny', {}, e);
    return;
  }
  const metadata = NAME_PATTERN.test(upstream) ? protectedResourceMetadata(g, upstream) : undefined;
  if (!metadata) throw new CordonError('not_found', `no MCP upstream "${upstream.slice(0, 64)}" is defined by any policy`, { reason: 'upstream_unknown' });
  const body = JSON.stringify(metadata);
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    // Policies change only with a restart; browser-based MCP clients read it across origins.
    'cache-control': 'public, max-age=300',
    'access-control-allow-origin': '*',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}
