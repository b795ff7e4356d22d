import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { agents, type Agent } from '../store/agents.ts';
import { replayGuard } from '../store/replay.ts';
import type { Q } from '../store/db.ts';
import { isWellFormedId } from '../ids.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import type { FederationRule, Policy } from '../policy/types.ts';
import { checkPublicJwks } from '../agents/registry.ts';
import type { Attempt } from '../audit/attempt.ts';
import { startSession, type SessionStartResult } from '../sessions/start.ts';
import { audiencesOf } from '../tokens/claims.ts';

/** Asymmetric algorithms only: an HMAC "JWKS" would be a shared secret, and `none` is no signature. */
export const FEDERATION_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
/** An external token older than this (by `iat`) is refused even if its `exp` is further out. */
export const FEDERATION_MAX_AGE_SEC = 3600;
const MAX_JWT_LENGTH = 16_384;
/**
 * Header `typ` values of tokens that identify a principal. Kubernetes service-account tokens carry
 * none, CI OIDC tokens `JWT`, an IdP access token `at+jwt`; anything else (a DPoP proof, a logout
 * token, a JWT client assertion) is a different kind of token and is refused.
 */
const ACCEPTED_TYP = new Set(['jwt', 'application/jwt', 'at+jwt', 'application/at+jwt']);
/** Sessions store the subject in 256 characters. */
const MAX_SUBJECT_LENGTH = 256;

export interface FederationRequest {
  /** The authenticated agent, or null when the caller is the public workload client. */
  callerClientId: string | null;
  subjectToken: string;
  /** Which agent to become when several active agents are bound to the matching policy. */
  requestedActor?: string;
  scope?: string;
  task?: string;
  audience: string[];
  requestedTtl?: string;
  dpopJkt?: string | null;
}

interface Trust {
  policy: Policy;
  rule: FederationRule;
  /** Identifies the key source: the JWKS URL, or the resolved path of the JWKS file. */
  source: string;
}

/** A relative `jwks_file` is resolved against the directory of the policy file that names it. */
function keySource(policy: Policy, rule: FederationRule): string {
  return rule.jwks_uri ?? resolve(dirname(policy.file), rule.jwks_file!);
}

function resolverFor(b: Broker, t: Trust): JWTVerifyGetKey {
  // Kept on the broker between requests: remote JWKS sets keep jose's cache and cooldown.
  const byBroker = b.federationKeys;
  if (t.rule.jwks_uri) {
    let r = byBroker.get(t.source);
    if (!r) {
      r = { getKey: createRemoteJWKSet(new URL(t.rule.jwks_uri), { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 }) };
      byBroker.set(t.source, r);
    }
    return r.getKey;
  }
  // A JWKS file (a mounted Kubernetes OIDC key set, say) is re-read when it changes.
  let mtimeMs: number;
  try {
    mtimeMs = statSync(t.source).mtimeMs;
  } catch {
    throw new CordonError('temporarily_unavailable', `the key set of issuer ${t.rule.issuer} cannot be read`, { reason: 'federation_jwks_unavailable' });
  }
  const cached = byBroker.get(t.source);
  if (cached && cached.mtimeMs === mtimeMs) return cached.getKey;
  let getKey: JWTVerifyGetKey;
  try {
    getKey = createLocalJWKSet(checkPublicJwks(JSON.parse(readFileSync(t.source, 'utf8'))));
  } catch {
    throw new CordonError('temporarily_unavailable', `the key set of issuer ${t.rule.issuer} is not a valid public JWKS`, {
      reason: 'federation_jwks_invalid',
    });
  }
  byBroker.set(t.source, { getKey, mtimeMs });
  return getKey;
}

const refuse = (why: string, reason: string): CordonError => new CordonError('invalid_grant', why, { reason });
const clip = (s: string, n = 120): string => (s.length > n ? `${s.slice(0, n)}…` : s);

/** Verifies the JWT against one key source: signature, issuer, algorithm, exp/nbf on the broker's clock, and age. */
async function verifyWith(b: Broker, jwt: string, t: Trust): Promise<JWTPayload> {
  const getKey = resolverFor(b, t);
  const options = {
    issuer: t.rule.issuer,
    algorithms: FEDERATION_ALGS,
    currentDate: new Date(b.clock.now()),
    clockTolerance: b.config.clockSkewSec,
    maxTokenAge: FEDERATION_MAX_AGE_SEC,
    requiredClaims: ['iss', 'sub', 'exp', 'iat'],
  };
  try {
    return (await jwtVerify(jwt, getKey, options)).payload;
  } catch (e) {
    // Several keys without a kid to pick one: try each (jose leaves this to the caller).
    if (e instanceof joseErrors.JWKSMultipleMatchingKeys) {
      let last: unknown = e;
      for await (const key of e as unknown as AsyncIterable<CryptoKey>) {
        try {
          return (await jwtVerify(jwt, key, options)).payload;
        } catch (inner) {
          last = inner;
          if (!(inner instanceof joseErrors.JWSSignatureVerificationFailed)) break;
        }
      }
      throw mapVerifyError(last, t);
    }
    throw mapVerifyError(e, t);
  }
}

function mapVerifyError(e: unknown, t: Trust): CordonError {
  const iss = clip(t.rule.issuer);
  if (e instanceof CordonError) return e;
  if (e instanceof joseErrors.JWTExpired && e.claim === 'iat')
    return refuse(`subject_token from ${iss} is too old (iat; at most ${FEDERATION_MAX_AGE_SEC}s old)`, 'federation_too_old');
  if (e instanceof joseErrors.JWTExpired) return refuse(`subject_token from ${iss} has expired`, 'federation_expired');
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'nbf') return refuse(`subject_token from ${iss} is not yet valid (nbf)`, 'federation_not_yet_valid');
    if (e.claim === 'iat') return refuse(`subject_token from ${iss} is issued in the future (iat)`, 'federation_iat_future');
    return refuse(`subject_token from ${iss} failed the ${e.claim} check: ${e.reason}`, `federation_claim_${e.reason}`);
  }
  if (e instanceof joseErrors.JWSSignatureVerificationFailed)
    return refuse(`subject_token signature does not verify with the keys of ${iss}`, 'federation_bad_signature');
  if (e instanceof joseErrors.JWKSNoMatchingKey || e instanceof joseErrors.JWKSMultipleMatchingKeys)
    return refuse(`no key of ${iss} matches the subject_token (kid/alg)`, 'federation_unknown_key');
  if (e instanceof joseErrors.JOSEAlgNotAllowed || e instanceof joseErrors.JOSENotSupported)
    return refuse('subject_token algorithm is not allowed', 'federation_bad_alg');
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid)
    return refuse('subject_token is not a valid signed JWT', 'federation_malformed');
  // Fetch failures, timeouts, a JWKS endpoint answering garbage: the broker's problem, not the caller's.
  return new CordonError('temporarily_unavailable', `the key set of ${iss} could not be fetched; try again later`, { reason: 'federation_jwks_unavailable' });
}

/**
 * Workload identity federation: a JWT from an issuer a policy trusts (`federation:` rules) opens a
 * session for the agent bound to that policy (origin `federation`).
 *
 * Which agent: the caller itself when it authenticated as an agent (it must be bound to a matching
 * policy); otherwise the agent named by `requested_actor`, which must be an active agent bound to
 * a policy whose rule matched; with no `requested_actor`, the one active agent bound to the
 * matching policies — and if there are several, the request must name one. A federation rule
 * therefore never lets a workload pick an agent outside the policies that trust its identity.
 *
 * The session's `sub` is `<issuer>#<sub>`: RFC 8693 §2.1/§4.1 make the issued token's subject the
 * subject of the `subject_token` (the external principal — a workload, a CI job, a user for
 * on-behalf-of), while the party acting for it is the agent, which the token names in
 * `client_id`. The issuer prefix keeps subjects of different issuers apart. The external `jti`
 * and `sub` also go to the audit row.
 */
export async function redeemFederatedJwt(b: Broker, req: FederationRequest, attempt: Attempt): Promise<SessionStartResult> {
  attempt
    .by(req.callerClientId, req.callerClientId ? [req.callerClientId] : null)
    .note({ origin: 'federation', requested_actor: req.requestedActor?.slice(0, 64), scope: req.scope, task: req.task, audience: req.audience });
  const jwt = req.subjectToken;
  if (jwt.length > MAX_JWT_LENGTH || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(jwt)) throw refuse('subject_token is not a compact signed JWT', 'federation_malformed');
  let header: ReturnType<typeof decodeProtectedHeader>;
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(jwt);
    unverified = decodeJwt(jwt);
  } catch {
    throw refuse('subject_token is not a valid JWT', 'federation_malformed');
  }
  if (typeof header.alg !== 'string' || !FEDERATION_ALGS.includes(header.alg))
    throw refuse(`subject_token algorithm ${JSON.stringify(header.alg)} is not allowed (asymmetric signatures only)`, 'federation_bad_alg');
  if (header.typ !== undefined && !ACCEPTED_TYP.has(String(header.typ).toLowerCase()))
    throw refuse(`subject_token typ ${JSON.stringify(clip(String(header.typ), 40))} is not an identity token`, 'federation_bad_typ');
  if (typeof unverified.iss !== 'string' || unverified.iss === '') throw refuse('subject_token has no issuer', 'federation_malformed');
  const iss = unverified.iss;
  attempt.note({ external_issuer: iss });
  if (iss === b.config.issuer)
    throw refuse(
      "subject_token is one of this broker's own tokens: use subject_token_type urn:ietf:params:oauth:token-type:access_token to delegate it",
      'federation_own_token',
    );

  const trusts: Trust[] = [];
  for (const policy of b.policies.list()) {
    for (const rule of policy.federation) if (rule.issuer === iss) trusts.push({ policy, rule, source: keySource(policy, rule) });
  }
  if (!trusts.length) throw refuse(`issuer ${clip(iss)} is not trusted by any policy`, 'federation_unknown_issuer');

  // Verify against each distinct key source that trusts this issuer; the first that verifies decides.
  let payload: JWTPayload | undefined;
  let source: string | undefined;
  let firstError: unknown;
  for (const s of [...new Set(trusts.map((t) => t.source))]) {
    try {
      payload = await verifyWith(
        b,
        jwt,
        trusts.find((t) => t.source === s)!,
      );
      source = s;
      break;
    } catch (e) {
      firstError ??= e;
    }
  }
  if (!payload) throw firstError;
  const externalSub = String(payload.sub);
  attempt.note({ external_sub: externalSub });

  const aud = audiencesOf(payload);
  const forUs = trusts.filter((t) => t.source === source && aud.includes(t.rule.audience));
  if (!forUs.length) throw refuse(`subject_token audience is not one this broker accepts from ${clip(iss)}`, 'federation_wrong_audience');
  const mapped = forUs.filter((t) => typeof payload[t.rule.claim] === 'string' && payload[t.rule.claim] === t.rule.match);
  if (!mapped.length) throw refuse(`subject ${clip(externalSub)} of ${clip(iss)} is not mapped to any agent`, 'federation_unmapped');

  const subject = `${iss}#${externalSub}`;
  if (subject.length > MAX_SUBJECT_LENGTH)
    throw refuse(`subject_token issuer and sub together exceed ${MAX_SUBJECT_LENGTH} characters`, 'federation_subject_too_long');

  const agent = await pickAgent(b, req, [...new Set(mapped.map((t) => t.policy.name))]);
  attempt.by(agent.id, [agent.id]);
  const claim = mapped.some((t) => t.policy.name === agent.policy && t.rule.single_use) ? singleUseClaim(b, iss, payload) : undefined;
  return await startSession(
    b,
    {
      clientId: agent.id,
      scope: req.scope,
      task: req.task,
      audience: req.audience,
      requestedTtl: req.requestedTtl,
      dpopJkt: req.dpopJkt,
      origin: 'federation',
      subject,
      auditParams: {
        origin: 'federation',
        external_issuer: iss,
        external_sub: externalSub,
        ...(typeof payload.jti === 'string' ? { external_jti: payload.jti.slice(0, 128) } : {}),
      },
      claim,
    },
    attempt,
  );
}

/**
 * A `single_use` rule: the JWT's `jti` is claimed in the same transaction as the session it opens,
 * until the JWT expires (plus the clock skew the broker tolerates), so a replayed JWT — stolen from
 * a log or a proxy — opens nothing, on any replica.
 */
function singleUseClaim(b: Broker, iss: string, payload: JWTPayload): (tx: Q) => Promise<void> {
  const jti = payload.jti;
  if (typeof jti !== 'string' || jti === '' || jti.length > 256)
    throw refuse(`subject_token from ${clip(iss)} has no usable jti, which a single_use rule needs`, 'federation_jti_missing');
  const key = `fedjwt:${createHash('sha256').update(`${iss}\n${jti}`).digest('base64url')}`;
  const until = (payload.exp as number) * 1000 + b.config.clockSkewSec * 1000;
  return async (tx) => {
    // Checked again at commit time: a JWT that expired while its request waited claims nothing.
    if (until <= b.clock.now()) throw refuse(`subject_token from ${clip(iss)} has expired`, 'federation_expired');
    if (!(await replayGuard.claim(tx, key, until, b.clock.now())))
      throw refuse(`subject_token from ${clip(iss)} has been used before (its rule is single_use)`, 'federation_replay');
  };
}

async function pickAgent(b: Broker, req: FederationRequest, policyNames: string[]): Promise<Agent> {
  const candidates: Agent[] = [];
  for (const p of policyNames) candidates.push(...(await agents.listByPolicy(b.db, p)).filter((a) => a.status === 'active'));
  const policies = policyNames.join(', ');
  if (req.callerClientId !== null) {
    const a = candidates.find((c) => c.id === req.callerClientId);
    if (!a) throw refuse(`this identity does not map to the calling agent (policy ${policies})`, 'federation_actor_not_mapped');
    if (req.requestedActor !== undefined && req.requestedActor !== a.id && req.requestedActor !== a.name) {
      throw new CordonError('invalid_request', 'requested_actor must name the calling agent (or be left out)', { reason: 'federation_actor_mismatch' });
    }
    return a;
  }
  if (req.requestedActor !== undefined) {
    const named = req.requestedActor;
    if (!isWellFormedId(named) && !NAME_PATTERN.test(named))
      throw new CordonError('invalid_request', 'requested_actor is malformed', { reason: 'actor_malformed' });
    const a = candidates.find((c) => c.id === named || c.name === named);
    if (!a) throw refuse(`requested_actor ${named} is not an active agent this identity maps to (policy ${policies})`, 'federation_actor_not_mapped');
    return a;
  }
  if (candidates.length === 1) return candidates[0];
  if (!candidates.length) throw refuse(`no active agent is bound to policy ${policies}, which this identity maps to`, 'federation_no_agent');
  throw new CordonError('invalid_request', `${candidates.length} agents share policy ${policies}: name one with requested_actor`, {
    reason: 'federation_actor_ambiguous',
  });
}
