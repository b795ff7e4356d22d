import { errors as joseErrors, jwtVerify, decodeProtectedHeader } from 'jose';
import type { Broker } from '../broker.ts';
import { CordonError, type OAuthErrorCode } from '../errors.ts';
import { SIGNING_ALGS } from '../keys/keyring.ts';
import canonicalize from 'canonicalize';
import { type TokenState, type TokenView, chainActive, loadTokenView as loadView, stateOf } from '../store/liveness.ts';
import { ACCESS_TOKEN_TYP, audiencesOf, chainOf, type AccessTokenClaims } from './claims.ts';
import { isWellFormedId } from '../ids.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { transact } from '../store/db.ts';

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
    if (e instanceof joseErrors.JWTClaimValidationFailed)
      throw fail(`token claim check failed: ${e.claim} ${e.reason}`, e.claim === 'nbf' || e.claim === 'iat' ? 'token_not_yet_valid' : 'token_invalid');
    if (e instanceof joseErrors.JWSSignatureVerificationFailed) throw fail('token signature is invalid', 'bad_signature');
    throw fail('token could not be verified');
  }
}

export type { TokenState, TokenView } from '../store/liveness.ts';
export { stateOf } from '../store/liveness.ts';

/** The record's view of a token (one query: token, session, holder, root). */
export const loadTokenView = (b: Broker, jti: string): Promise<TokenView | undefined> => loadView(b.read, jti);

/** Why a token is not live, in words (every front door says the same). */
export const WHY_TEXT: Record<Exclude<TokenState, { active: true }>['why'], string> = {
  unknown: 'token is not known to this broker',
  expired: 'token has expired',
  revoked: 'token has been revoked',
  session_revoked: 'the session of this token has been revoked',
  session_expired: 'the session of this token has ended',
  agent_inactive: 'an agent in the chain of this token (its holder, an earlier link, or the agent that opened its session) is disabled or revoked',
  mismatch: 'token does not match its record',
};

/**
 * The token as the broker recorded it. Decisions take every claim from here, never from what was
 * presented: a token signed with a leaked key but never issued by this broker has no record, and one
 * whose claims were widened does not match it (tokenStatus refuses it).
 */
export function recordClaims(b: Broker, v: TokenView): AccessTokenClaims {
  const iat = Math.floor(v.issuedAt / 1000);
  return {
    iss: b.config.issuer,
    sub: v.sessionSubject,
    aud: v.audience.length === 1 ? v.audience[0] : v.audience,
    iat,
    nbf: iat,
    exp: Math.floor(v.expiresAt / 1000),
    jti: v.jti,
    client_id: v.clientId,
    scope: v.scope,
    sid: v.sid,
    ...(v.sessionTask ? { task: v.sessionTask } : {}),
    cordon_depth: v.depth,
    ...(v.act ? { act: v.act } : {}),
    ...(v.cnfJkt ? { cnf: { jkt: v.cnfJkt } } : {}),
  };
}

/** The claims that differ between a presented token and its record (empty when they agree). */
export function claimMismatches(presented: AccessTokenClaims, record: AccessTokenClaims): string[] {
  const same = (a: unknown, b: unknown): boolean => canonicalize(a ?? null) === canonicalize(b ?? null);
  const out: string[] = [];
  const pairs: Array<[string, unknown, unknown]> = [
    ['sub', presented.sub, record.sub],
    ['aud', audiencesOf(presented), audiencesOf(record)],
    ['iat', presented.iat, record.iat],
    ['exp', presented.exp, record.exp],
    ['client_id', presented.client_id, record.client_id],
    ['scope', presented.scope, record.scope],
    ['sid', presented.sid, record.sid],
    ['task', presented.task, record.task],
    ['cordon_depth', presented.cordon_depth, record.cordon_depth],
    ['act', presented.act, record.act],
    ['cnf', presented.cnf?.jkt, record.cnf?.jkt],
  ];
  for (const [name, a, b] of pairs) if (!same(a, b)) out.push(name);
  return out;
}

/**
 * The record's verdict on a verified token: its own row, session, holder and root (one join), and
 * for chains deeper than one link the agents in between (one more query), so disabling any link
 * of a chain stops what was delegated through it. A validly signed token whose claims differ from
 * its record was not minted by this broker as presented (a leaked signing key): it is inactive,
 * and an `alarm` row names the claims that differ (`mismatched`), whoever asked.
 */
export async function tokenStatus(b: Broker, claims: AccessTokenClaims): Promise<{ state: TokenState; view?: TokenView; mismatched?: string[] }> {
  const view = await loadTokenView(b, claims.jti);
  const state = stateOf(view, b.clock.now());
  if (!state.active) return { state, view };
  const differ = claimMismatches(claims, recordClaims(b, view!));
  if (differ.length) {
    await transact(b.db, (tx) =>
      appendAudit(tx, {
        at: b.clock.now(),
        event: 'alarm',
        decision: 'info',
        agentId: view!.clientId,
        sid: view!.sid,
        jti: view!.jti,
        chain: chainOf(recordClaims(b, view!), view!.sessionAgentId),
        reason: `token_mismatch: a validly signed token differs from its record (${differ.join(', ')}); the signing key may have leaked`,
        params: { mismatched: differ },
      }),
    );
    return { state: { active: false, why: 'mismatch' }, view, mismatched: differ };
  }
  if (!(await chainActive(b.read, view!))) return { state: { active: false, why: 'agent_inactive' }, view };
  return { state, view };
}

/**
 * Signature, then record: the full check for a token presented as a credential. The claims
 * returned are the record's (recordClaims), which the presented ones were checked against.
 */
export async function requireActiveToken(b: Broker, jwt: unknown, code: OAuthErrorCode): Promise<{ claims: AccessTokenClaims; view: TokenView }> {
  const presented = await verifySignature(b, jwt, code);
  const view = await requireActiveRecord(b, presented, code);
  return { claims: recordClaims(b, view), view };
}

/** The record half of requireActiveToken, for callers that must tell a forged token from an authentic but inactive one. */
export async function requireActiveRecord(b: Broker, presented: AccessTokenClaims, code: OAuthErrorCode): Promise<TokenView> {
  const { state, view, mismatched } = await tokenStatus(b, presented);
  if (!state.active) throw new CordonError(code, WHY_TEXT[state.why], { reason: `token_${state.why}`, ...(mismatched ? { auditParams: { mismatched } } : {}) });
  return view!;
}
