/**
 * MCP through the gateway: the official client SDK's Streamable HTTP transport for
 * `{gatewayUrl}/mcp/{upstream}`, whose every request carries the agent's current token (and a DPoP
 * proof when the token is bound). The token is asked of the agent per request, so renewal inside
 * the session is the agent's as for any other call; a 401 (a token the gateway no longer takes)
 * renews once and retries, and a session that has ended fails the request with `session_ended`.
 *
 * `@modelcontextprotocol/client` is imported only when a transport is asked for, so the rest of the
 * SDK loads without it.
 */
import type { StreamableHTTPClientTransport, StreamableHTTPClientTransportOptions } from '@modelcontextprotocol/client';
import { CordonSdkError } from './errors.ts';
import type { FetchLike } from './http.ts';

export interface McpTransportOptions {
  /** The gateway's public URL (default: the agent's `gatewayUrl`, CORDON_GATEWAY_URL). */
  gatewayUrl?: string;
  /** The MCP endpoint itself, when not `{gatewayUrl}/mcp/{upstream}` (e.g. `CORDON_MCP_<NAME>_URL` under `cordon exec --gateway`). */
  url?: string;
  /** Passed to the SDK's transport (reconnection, protocol version, session id…); `fetch` and `authProvider` are the agent's. */
  transport?: Omit<StreamableHTTPClientTransportOptions, 'fetch' | 'authProvider'>;
}

/** What the transport needs of the agent: headers presenting its current token, and a way to force the next one to be new. */
export interface TokenPresenter {
  authorizationHeaders(method: string, url: string): Promise<Record<string, string>>;
  /** After a 401 for `refused`: forget it if it is still the current token. Absent when the agent cannot renew (a handed-over token). */
  invalidate?: (refused: string) => void;
}

type McpFetch = (url: string | URL, init?: RequestInit) => Promise<Response>;

/** `fetch` for the MCP transport: the agent's token on every request, one renewal and retry on 401 when the body can be sent again. */
export function fetchPresentingToken(agent: TokenPresenter, base: FetchLike): McpFetch {
  return async (input, init = {}) => {
    const url = typeof input === 'string' ? input : input.href;
    const method = (init.method ?? 'GET').toUpperCase();
    let presented = '';
    const send = async (): Promise<Response> => {
      const headers = new Headers(init.headers);
      for (const [k, v] of Object.entries(await agent.authorizationHeaders(method, url))) headers.set(k, v);
      presented = headers.get('authorization')?.replace(/^\S+ +/, '') ?? '';
      return base(url, { ...init, method, headers });
    };
    const res = await send();
    const replayable = init.body === undefined || init.body === null || typeof init.body === 'string';
    if (res.status !== 401 || !agent.invalidate || !replayable) return res;
    await res.body?.cancel().catch(() => {});
    // Requests in flight together share one renewal: only the first 401 for a token forgets it.
    agent.invalidate(presented);
    return send();
  };
}

/** The MCP endpoint of `upstream` at the gateway. */
export function mcpEndpoint(upstream: string, opts: McpTransportOptions, agentGatewayUrl: string | undefined): URL {
  if (opts.url !== undefined) return parsed(opts.url, 'url');
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(upstream))
    throw new CordonSdkError('config', `MCP upstream name ${JSON.stringify(upstream.slice(0, 80))} is malformed`);
  const gateway = opts.gatewayUrl ?? agentGatewayUrl;
  if (!gateway) throw new CordonSdkError('config', 'the gateway URL is required for an MCP transport (gatewayUrl, CORDON_GATEWAY_URL)');
  return parsed(`${gateway.replace(/\/+$/, '')}/mcp/${upstream}`, 'gatewayUrl');
}

function parsed(u: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    throw new CordonSdkError('config', `${what} is not a URL: ${JSON.stringify(u.slice(0, 200))}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new CordonSdkError('config', `${what} must be an http(s) URL`);
  return url;
}

/** The official MCP client SDK, loaded on first use. */
export async function loadMcpClient(): Promise<typeof import('@modelcontextprotocol/client')> {
  try {
    return await import('@modelcontextprotocol/client');
  } catch (e) {
    throw new CordonSdkError('unsupported', 'an MCP transport needs the official MCP client SDK: npm install @modelcontextprotocol/client (2.x)', { cause: e });
  }
}

export async function mcpTransportFor(
  agent: TokenPresenter,
  base: FetchLike,
  endpoint: URL,
  opts: McpTransportOptions,
): Promise<StreamableHTTPClientTransport> {
  const { StreamableHTTPClientTransport } = await loadMcpClient();
  return new StreamableHTTPClientTransport(endpoint, { ...opts.transport, fetch: fetchPresentingToken(agent, base) });
}
