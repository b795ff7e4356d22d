/**
 * Step one of every call: who is calling. A Cordon access token (`Authorization: Bearer`, or
 * `DPoP` with its proof) verified offline, then judged live from memory exactly as `/introspect`
 * would judge it from the database, and made for the gateway (its `aud` names the gateway or the
 * broker). What is learned goes into the attempt, so a refusal from here on names its agent.
 */
import type { IncomingMessage } from 'node:http';
import type { Attempt } from '../audit/attempt.ts';
import { CordonError } from '../errors.ts';
import { mcpResourceUrl } from '../policy/mcp-resource.ts';
import { audiencesOf } from '../tokens/claims.ts';
import { requireDpopForToken } from '../tokens/dpop.ts';
import type { GatewayContext } from './context.ts';
import type { GatewayPrincipal } from './principal.ts';

/** The token in an `Authorization`-style header value: its scheme and the token itself. */
export function bearerOf(header: string | undefined): { scheme: 'Bearer' | 'DPoP'; token: string } | undefined {
  const m = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header ?? '');
  if (!m) return undefined;
  return { scheme: m[1].toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer', token: m[2] };
}

export const tokenMissing = (): CordonError =>
  new CordonError('invalid_token', 'a Cordon access token is required (Authorization: Bearer <token>)', { reason: 'token_missing' });

/**
 * Whether the token's audience admits it here: the gateway or the broker admit it on every route;
 * `resource`, the URL of one MCP upstream (`mcpResourceOf`), admits it on that upstream's route
 * only, so a token asked for one MCP server opens nothing else.
 */
export function audienceAllows(g: GatewayContext, p: { claims: { aud?: string | string[] } }, resource?: string): boolean {
  const aud = audiencesOf(p.claims);
  return aud.includes(g.url) || aud.includes(g.b.config.issuer) || (resource !== undefined && aud.includes(resource));
}

/** The resource indicator of an MCP upstream at this gateway: `{gatewayUrl}/mcp/{upstream}`. */
export const mcpResourceOf = (g: GatewayContext, upstream: string): string => mcpResourceUrl(g.url, upstream);

/**
 * A verified JWT's live record, with the checks every front door of the gateway shares (audience).
 * `resource` is given on an MCP upstream's route only (see audienceAllows).
 */
export async function principalOfToken(g: GatewayContext, jwt: string, attempt: Attempt, resource?: string): Promise<GatewayPrincipal> {
  const p = await g.tokens.require(jwt, 'invalid_token', (presented) => attempt.by(presented.client_id).in(presented.sid, presented.jti));
  attempt.by(p.claims.client_id, p.chain).in(p.claims.sid, p.claims.jti);
  if (!audienceAllows(g, p, resource))
    throw new CordonError(
      'invalid_token',
      `the token's audience names neither the gateway (${g.url}) nor the broker${resource === undefined ? '' : ` nor ${resource}`}`,
      { reason: 'audience_not_gateway' },
    );
  return g.tokens.withPolicies(p);
}

/**
 * The Authorization header, with DPoP where the token is bound (htu is the gateway URL of this
 * path). `resource`: on an MCP upstream's route, its `mcpResourceOf` (a token for it is admitted).
 */
export async function authenticateCall(g: GatewayContext, req: IncomingMessage, path: string, attempt: Attempt, resource?: string): Promise<GatewayPrincipal> {
  const given = bearerOf(req.headers.authorization);
  if (!given) {
    if (req.headers.authorization)
      throw new CordonError('invalid_token', 'Authorization must be Bearer <token> or DPoP <token>', { reason: 'token_malformed' });
    throw tokenMissing();
  }
  const p = await principalOfToken(g, given.token, attempt, resource);
  if (!p.view.cnfJkt) {
    if (given.scheme === 'DPoP')
      throw new CordonError('invalid_token', 'token is not DPoP-bound: present it as Authorization: Bearer', { reason: 'dpop_unbound' });
    return p;
  }
  if (given.scheme !== 'DPoP')
    throw new CordonError('invalid_token', 'token is DPoP-bound: present it as Authorization: DPoP with a DPoP proof', { reason: 'dpop_scheme' });
  // A bad proof at a protected resource is a 401 (RFC 9449 §7.1), as at /credentials.
  try {
    await requireDpopForToken(g.b, {
      claims: { cnf: { jkt: p.view.cnfJkt } },
      proof: req.headers.dpop,
      method: req.method ?? 'GET',
      url: `${g.url}${path}`,
      accessToken: given.token,
    });
  } catch (e) {
    if (e instanceof CordonError && e.code === 'invalid_dpop_proof')
      throw new CordonError('invalid_dpop_proof', e.description, { reason: e.reason, status: 401 });
    throw e;
  }
  return p;
}
