import type { JWTPayload } from 'jose';
import type { ActClaim } from '../tokens/claims.ts';

/** The caller, as the middleware verified it; on `req.agent`. */
export interface AgentIdentity {
  /** The agent holding the token (the current actor when delegated). */
  client_id: string;
  /** The principal the chain acts for (the root agent, or the user it acts on behalf of). */
  sub: string;
  /** RFC 8693 actor claim as issued (outermost = current holder). */
  act?: ActClaim;
  /** Holders from the root agent to the current one. */
  chain: string[];
  sid: string;
  jti: string;
  scope: string[];
  task?: string;
  depth: number;
  exp: number;
  /** DPoP key thumbprint when the token is bound. */
  jkt?: string;
  claims: JWTPayload;
}

export type AgentTokenErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'invalid_dpop_proof';

/**
 * Why a request was refused. `code` is the RFC 6750/9449 error; `reason` a stable tag:
 * missing, malformed, bad_alg, bad_typ, no_kid, unknown_kid, jwks_unavailable, jwks_invalid,
 * bad_signature, expired, not_yet_valid, issuer, audience, claims, revoked, feed_unavailable,
 * scope, dpop_required, dpop_unbound, dpop_invalid, dpop_mismatch, dpop_replay.
 */
export class AgentTokenError extends Error {
  readonly code: AgentTokenErrorCode;
  readonly reason: string;
  readonly status: number;
  constructor(code: AgentTokenErrorCode, reason: string, message: string) {
    super(message);
    this.name = 'AgentTokenError';
    this.code = code;
    this.reason = reason;
    this.status = code === 'insufficient_scope' ? 403 : code === 'invalid_request' ? 400 : 401;
  }
}
