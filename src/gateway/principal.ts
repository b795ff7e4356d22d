/**
 * Who is calling through the gateway, as the broker recorded it: the token's record (never the
 * presented claims), its chain, the scopes it holds, and the policies that bound it. Built by the
 * token check (token-check.ts) and read by every later step; never mutated.
 */
import type { Policy } from '../policy/types.ts';
import type { AccessTokenClaims } from '../tokens/claims.ts';
import type { TokenView } from '../tokens/verify.ts';

export interface GatewayPrincipal {
  /** The record's claims (tokens/verify.ts recordClaims). */
  claims: AccessTokenClaims;
  view: TokenView;
  /** Agent ids from the session's root to the holder. */
  chain: string[];
  /** The token's scope, parsed. */
  scopes: string[];
  /** The session root's policy: its upstreams and credentials govern the session. */
  rootPolicy: Policy;
  /** The policy of every agent along the chain, root first (egress must be allowed by each). */
  chainPolicies: Policy[];
  /** When the token stops being valid (ms): the token's exp or the session's end, whichever is first. */
  expiresAt: number;
}
