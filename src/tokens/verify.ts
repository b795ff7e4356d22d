import { errors as joseErrors, jwtVerify, decodeProtectedHeader } from 'jose';
import type { Broker } from '../broker.ts';
import { CordonError, type OAuthErrorCode } from '../errors.ts';
import { SIGNING_ALGS } from '../keys/keyring.ts';
import { num, numOrNull } from '../store/db.ts';
import { ACCESS_TOKEN_TYP, chainOf, type AccessTokenClaims } from './claims.ts';
import { isWellFormedId } from '../ids.ts';

/** Refuses anything that is not even shaped like one of our tokens before any crypto runs. */
const MAX_TOKEN_LENGTH = 8192;

/**
 * Verifies a JWT the broker issued: compact JWS, our `typ`, an allowed algorithm, a key we
 * publish, our issuer, and time bounds on the injected clock. `code` is the error to raise
 * (invalid_grant at the token endpoint, invalid_token for bearer use).
 */
export async function verifySignature(b: Broker, jwt: unknown, code: OAuthErrorCode): Promise<AccessTokenClaims> {
  const fail = (why: string, reason = 'token_invalid'): CordonError => new CordonError(code, why, { reason });
  if (typeof jwt !== 'string' || jwt.length > MAX_TOKEN_LENGTH || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(jwt)) throw fail('token is not a compact JWS');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jwt);
  } catch {
    throw fail('token header is not valid JSON');
  }
  if (!SIGNING_ALGS.includes(header.alg as never)) throw fail(`token algorithm ${JSON.stringify(header.alg)} is not allowed`, 'bad_alg');
  if (typeof header.kid !== 'string') throw fail('token has no kid');
  const vk = await b.keys.verificationKeyFor(header.kid);
  if (!vk) throw fail('token was not signed by a key of this broker', 'unknown_key');
  if (vk.alg !== header.alg) throw fail('token algorithm does not match its key', 'bad_alg');
  try {
    const { payload } = await jwtVerify(jwt, vk.key, {
      algorithms: [vk.alg],
      typ: ACCESS_TOKEN_TYP,
      issuer: b.config.issuer,
      currentDate: new Date(b.clock.now()),
      clockTolerance: b.config.clockSkewSec,
      requiredClaims: ['jti', 'exp', 'iat', 'sub', 'sid', 'client_id'],
    });
    if (!isWellFormedId(payload.jti) || !isWellFormedId(payload.sid)) throw fail('token ids are malformed');
    return payload as unknown as AccessTokenClaims;
  } catch (e) {
    if (e instanceof CordonError) throw e;
    if (e instanceof joseErrors.JWTExpired) throw fail('token has expired', 'token_expired');
    if (e instanceof joseErrors.JWTClaimValidationFailed) throw fail(`token claim check failed: ${e.claim} ${e.reason}`, e.claim === 'nbf' || e.claim === 'iat' ? 'token_not_yet_valid' : 'token_invalid');
    if (e instanceof joseErrors.JWSSignatureVerificationFailed) throw fail('token signature is invalid', 'bad_signature');
    throw fail('token could not be verified');
  }
}

export type TokenState =
  | { active: true }
  | { active: false; why: 'unknown' | 'expired' | 'revoked' | 'session_revoked' | 'session_expired' | 'agent_inactive' | 'mismatch' };

export interface TokenView {
  jti: string;
  sid: string;
  clientId: string;
  parentJti: string | null;
  scope: string;
  depth: number;
  expiresAt: number;
  revokedAt: number | null;
  cnfJkt: string | null;
  /** The holder's name (for backend metadata). */
  holderName: string;
  sessionAgentId: string;
  sessionTask: string | null;
  sessionExpiresAt: number;
  sessionRevokedAt: number | null;
  holderStatus: string;
  /** The status of the agent that opened the session: a disabled or revoked root takes its whole chain down. */
  rootStatus: string;
  rootName: string;
  /** The root's policy: it defines what the session may do (delegation bounds, credentials). */
  rootPolicy: string;
}

/** One query: the token, its session and its holder. Revocation cascades are written eagerly, so this is all it takes. */
export async function loadTokenView(b: Broker, jti: string): Promise<TokenView | undefined> {
  const r = await b
    .read('tokens as t')
    .join('sessions as s', 's.sid', 't.sid')
    .join('agents as a', 'a.id', 't.client_id')
    .join('agents as r', 'r.id', 's.agent_id')
    .select('t.jti', 't.sid', 't.client_id', 't.parent_jti', 't.scope', 't.depth', 't.expires_at', 't.revoked_at', 't.cnf_jkt', 'a.name as a_name', 's.agent_id as s_agent', 's.task as s_task', 's.expires_at as s_exp', 's.revoked_at as s_rev', 'a.status as a_status', 'r.status as r_status', 'r.name as r_name', 'r.policy as r_policy')
    .where('t.jti', jti)
    .first();
  if (!r) return undefined;
  return {
    jti: r.jti,
    sid: r.sid,
    clientId: r.client_id,
    parentJti: r.parent_jti ?? null,
    scope: r.scope,
    depth: num(r.depth),
    expiresAt: num(r.expires_at),
    revokedAt: numOrNull(r.revoked_at),
    cnfJkt: r.cnf_jkt ?? null,
    holderName: r.a_name,
    sessionAgentId: r.s_agent,
    sessionTask: r.s_task ?? null,
    sessionExpiresAt: num(r.s_exp),
    sessionRevokedAt: numOrNull(r.s_rev),
    holderStatus: r.a_status,
    rootStatus: r.r_status,
    rootName: r.r_name,
    rootPolicy: r.r_policy,
  };
}

export function stateOf(v: TokenView | undefined, now: number): TokenState {
  if (!v) return { active: false, why: 'unknown' };
  if (v.revokedAt !== null) return { active: false, why: 'revoked' };
  if (v.sessionRevokedAt !== null) return { active: false, why: 'session_revoked' };
  if (v.expiresAt <= now) return { active: false, why: 'expired' };
  if (v.sessionExpiresAt <= now) return { active: false, why: 'session_expired' };
  if (v.holderStatus !== 'active' || v.rootStatus !== 'active') return { active: false, why: 'agent_inactive' };
  return { active: true };
}

const WHY_TEXT: Record<Exclude<TokenState, { active: true }>['why'], string> = {
  unknown: 'token is not known to this broker',
  expired: 'token has expired',
  revoked: 'token has been revoked',
  session_revoked: 'the session of this token has been revoked',
  session_expired: 'the session of this token has ended',
  agent_inactive: 'an agent in the chain of this token (its holder, an earlier link, or the agent that opened its session) is disabled or revoked',
  mismatch: 'token does not match its record',
};

/**
 * The record's verdict on a verified token: its own row, session, holder and root (one join), and
 * for chains deeper than one link the agents in between (one more query), so disabling any link
 * of a chain stops what was delegated through it.
 */
export async function tokenStatus(b: Broker, claims: AccessTokenClaims): Promise<{ state: TokenState; view?: TokenView }> {
  const view = await loadTokenView(b, claims.jti);
  const state = stateOf(view, b.clock.now());
  if (!state.active) return { state, view };
  // The record is the source of truth; a token whose claims disagree with it was not minted here.
  if (view!.sid !== claims.sid || view!.clientId !== claims.client_id) return { state: { active: false, why: 'mismatch' }, view };
  if (claims.cordon_depth >= 2) {
    const between = chainOf(claims).slice(1, -1);
    const rows = await b.read('agents').select('id', 'status').whereIn('id', between);
    if (rows.length !== new Set(between).size || rows.some((r) => r.status !== 'active')) return { state: { active: false, why: 'agent_inactive' }, view };
  }
  return { state, view };
}

/** Signature, then record: the full check for a token presented as a credential. */
export async function requireActiveToken(b: Broker, jwt: unknown, code: OAuthErrorCode): Promise<{ claims: AccessTokenClaims; view: TokenView }> {
  const claims = await verifySignature(b, jwt, code);
  return { claims, view: await requireActiveRecord(b, claims, code) };
}

/** The record half of requireActiveToken, for callers that must tell a forged token from an authentic but inactive one. */
export async function requireActiveRecord(b: Broker, claims: AccessTokenClaims, code: OAuthErrorCode): Promise<TokenView> {
  const { state, view } = await tokenStatus(b, claims);
  if (!state.active) throw new CordonError(code, WHY_TEXT[state.why], { reason: `token_${state.why}` });
  return view!;
}
