/**
 * An MCP upstream as an OAuth protected resource: its resource indicator (RFC 8707) is its URL at
 * the gateway, `{gatewayUrl}/mcp/{upstream}`. The token endpoint issues tokens for it (their `aud`)
 * when the session's root policy defines that upstream, and the gateway admits such a token on that
 * upstream's route only.
 */
import { NAME_PATTERN } from './schema.ts';
import type { Policy } from './types.ts';

export const MCP_ROUTE_PREFIX = '/mcp/';

export const mcpResourceUrl = (gatewayUrl: string, upstream: string): string => `${gatewayUrl}${MCP_ROUTE_PREFIX}${upstream}`;
/** RFC 9728 metadata of an MCP upstream, served by the gateway. */
export const MCP_METADATA_PREFIX = '/.well-known/oauth-protected-resource/mcp/';
/** Where the metadata of `upstream` is served (the `resource_metadata` of a challenge). */
export const mcpMetadataUrl = (gatewayUrl: string, upstream: string): string => `${gatewayUrl}${MCP_METADATA_PREFIX}${upstream}`;

/** The upstream name a resource indicator names when it is `{gatewayUrl}/mcp/{name}` (one plain segment); undefined otherwise. */
export function mcpUpstreamOf(gatewayUrl: string, resource: string): string | undefined {
  const prefix = `${gatewayUrl}${MCP_ROUTE_PREFIX}`;
  if (!resource.startsWith(prefix)) return undefined;
  const name = resource.slice(prefix.length);
  return NAME_PATTERN.test(name) ? name : undefined;
}

/** Whether `policy` defines `name` as an upstream of kind mcp. */
export const definesMcpUpstream = (policy: Policy, name: string): boolean => Object.hasOwn(policy.upstreams, name) && policy.upstreams[name].kind === 'mcp';

/** Whether `resource` is the URL of an MCP upstream `policy` defines. */
export function isMcpResourceOf(policy: Policy, gatewayUrl: string, resource: string): boolean {
  const name = mcpUpstreamOf(gatewayUrl, resource);
  return name !== undefined && definesMcpUpstream(policy, name);
}
