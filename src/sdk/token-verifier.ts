import { decodeProtectedHeader, errors as joseErrors, jwtVerify, type CryptoKey, type JWTPayload } from 'jose';
import { covers } from '../policy/scopes.ts';
import { chainOf, type ActClaim } from '../tokens/claims.ts';
import { ACCESS_TOKEN_TYP } from '../protocol/constants.ts';
import { DpopProofError, verifyDpopProof } from '../protocol/dpop.ts';
import { AgentTokenError, type AgentIdentity, type AgentTokenErrorCode } from './agent-token-error.ts';
import { JwksCache } from './jwks.ts';
import { RevocationFeed } from './revocation-feed.ts';
import { isObject, type FetchLike, type HttpOptions } from './http.ts';

export interface AgentTokenVerifierOptions {
  /** The broker's issuer; tokens must carry exactly this `iss`. */
  issuer: string;
  /** This resource server's identifier(s); the token's `aud` must name one. */
  audience: string | string[];
  /** Scopes every request must hold (a wildcard scope in the token covers its prefix). */
  scopes?: string[];
  /** Default `${issuer}/jwks`. */
  jwksUri?: string;
  /** Default `${issuer}/revocations`. */
  revocationsUri?: string;
  /** How often the revocation feed is read. Default 5000 ms. */
  pollIntervalMs?: number;
  /** If the feed could not be read for this long, requests are refused (fail closed). Default max(30 s, 6 × poll interval). */
  feedStaleAfterMs?: number;
  /** Signature algorithms accepted. Default EdDSA and ES256 (the broker signs with one of them). */
  algorithms?: string[];
  /** Time for every decision: `exp`/`nbf`/`iat`, DPoP `iat`, JWKS age and cooldown, feed staleness (ms since the epoch). */
  clock?: { now(): number };
  /** Leeway for time claims. Default 10 s. */
  clockToleranceSec?: number;
  /** Minimum time between JWKS fetches triggered by an unknown `kid`. Default 30 s. */
  jwksCooldownMs?: number;
  /** The JWKS is re-read in the background after this long. Default 10 min. */
  jwksMaxAgeMs?: number;
  /** A DPoP proof is accepted this long after its `iat`. Default 60 s. */
  dpopProofWindowSec?: number;
  fetch?: FetchLike;
  timeoutMs?: number;
  /**
   * Tokens whose signature and claims were verified are remembered (by their exact string) so a
   * client reusing its token costs a map lookup, not a signature check. Expiry, revocation, DPoP
   * and scope are still checked on every request; a JWKS reload forgets everything. 0 turns it off.
   * Default 1000.
   */
  verifiedCacheSize?: number;
  /** Called when the JWKS or the feed cannot be read. */
  onBackgroundError?: (err: Error) => void;
}

export interface VerifyInput {
  authorization?: string;
  dpop?: string;
  method: string;
  url: string;
}

export interface AgentTokenVerifier {
  verify(input: VerifyInput): Promise<AgentIdentity>;
  readonly jwks: JwksCache;
  readonly feed: RevocationFeed;
  readonly requiredScopes: readonly string[];
  /** Stops polling. */
  close(): void;
}

const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;
const JWS = /^[\w-]+\.[\w-]+\.[\w-]+$/;
const MAX_TOKEN = 8192;
/** Faults of a proof that is well-formed but made for another request or token. */
const MISMATCH = new Set<DpopProofError['fault']>(['htm', 'htu', 'ath']);

const fail = (code: AgentTokenErrorCode, reason: string, msg: string) => new AgentTokenError(code, reason, msg);

function deepFreeze(o: unknown, depth = 0): void {
  if (typeof o !== 'object' || o === null || depth > 16) return;
  Object.freeze(o);
  for (const v of Object.values(o)) deepFreeze(v, depth + 1);
}

/**
 * Verifies Cordon access tokens offline: signature against the broker's JWKS, claims, the
 * revocation feed, DPoP proofs for bound tokens, scopes. Framework-free; the express adapter
 * (express.ts) wraps it.
 */
export function createAgentTokenVerifier(opts: AgentTokenVerifierOptions): AgentTokenVerifier {
  if (!opts.issuer) throw new TypeError('requireAgentToken: issuer is required');
  const audience = Array.isArray(opts.audience) ? opts.audience : [opts.audience];
  if (!audience.length || audience.some((a) => typeof a !== 'string' || !a)) throw new TypeError('requireAgentToken: audience is required');
  const issuer = opts.issuer.replace(/\/+$/, '');
  const algorithms = opts.algorithms ?? ['EdDSA', 'ES256'];
  for (const a of algorithms) {
    if (a === 'none' || /^HS/i.test(a)) throw new TypeError(`requireAgentToken: algorithm ${a} is not allowed (asymmetric only)`);
  }
  const requiredScopes = opts.scopes ?? [];
  const clock = opts.clock ?? { now: () => Date.now() };
  const tolerance = opts.clockToleranceSec ?? 10;
  const pollIntervalMs = opts.pollIntervalMs ?? 5000;
  const staleAfter = opts.feedStaleAfterMs ?? Math.max(30_000, 6 * pollIntervalMs);
  const window = opts.dpopProofWindowSec ?? 60;
  const http: HttpOptions = { fetch: opts.fetch ?? ((i, init) => fetch(i, init)), timeoutMs: opts.timeoutMs ?? 5000 };
  const jwks = new JwksCache({
    http,
    uri: opts.jwksUri ?? `${issuer}/jwks`,
    algorithms,
    cooldownMs: opts.jwksCooldownMs ?? 30_000,
    maxAgeMs: opts.jwksMaxAgeMs ?? 600_000,
    clock,
    onError: opts.onBackgroundError,
  });
  const feed = new RevocationFeed({
    http,
    uri: opts.revocationsUri ?? `${issuer}/revocations`,
    clock,
    toleranceSec: tolerance,
    onError: opts.onBackgroundError,
  });
  const seenProofs = new Map<string, number>();
  const cacheSize = opts.verifiedCacheSize ?? 1000;
  const verified = new Map<string, { payload: JWTPayload; kid: string; key: { key: CryptoKey; alg: string } }>();

  const purgeProofs = (): void => {
    const now = clock.now();
    for (const [k, exp] of seenProofs) if (exp < now) seenProofs.delete(k);
  };
  // Real time schedules the polls; every decision reads the injected clock.
  let timer: NodeJS.Timeout | null = setInterval(() => {
    void feed.poll();
    purgeProofs();
  }, pollIntervalMs);
  timer.unref();
  void feed.poll();
  void jwks.refresh();

  async function checkDpop(proof: string | undefined, token: string, jkt: string, method: string, url: string): Promise<void> {
    if (proof === undefined) throw fail('invalid_dpop_proof', 'dpop_required', 'the token is DPoP-bound: send a DPoP proof');
    let p;
    try {
      p = await verifyDpopProof(proof, { method, url, accessToken: token, nowMs: clock.now(), windowSec: window, skewSec: tolerance });
    } catch (e) {
      if (e instanceof DpopProofError) throw fail('invalid_dpop_proof', MISMATCH.has(e.fault) ? 'dpop_mismatch' : 'dpop_invalid', e.message);
      throw e;
    }
    if (p.jkt !== jkt) throw fail('invalid_token', 'dpop_mismatch', 'the DPoP proof key is not the key the token is bound to');
    const key = `${p.jkt}:${p.jti}`;
    if (seenProofs.has(key)) throw fail('invalid_dpop_proof', 'dpop_replay', 'the DPoP proof has been used before');
    if (seenProofs.size > 100_000) purgeProofs();
    seenProofs.set(key, (p.iat + window + 2 * tolerance) * 1000);
  }

  /** Signature and claims, or the cached result of an earlier verification of the very same token. */
  async function verifyJwt(token: string): Promise<JWTPayload> {
    const hit = verified.get(token);
    if (hit) {
      const nowSec = clock.now() / 1000;
      // Still signed by a key the broker publishes (a JWKS reload drops every entry), still in its time window.
      if (jwks.peek(hit.kid) === hit.key && (hit.payload.exp as number) > nowSec - tolerance && (hit.payload.nbf ?? 0) <= nowSec + tolerance) {
        verified.delete(token);
        verified.set(token, hit);
        return hit.payload;
      }
      verified.delete(token);
    }
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw fail('invalid_token', 'malformed', 'the token header is not valid JSON');
    }
    if (typeof header.alg !== 'string' || !algorithms.includes(header.alg))
      throw fail('invalid_token', 'bad_alg', `token algorithm ${JSON.stringify(header.alg)} is not allowed`);
    if (typeof header.kid !== 'string' || !header.kid) throw fail('invalid_token', 'no_kid', 'the token header has no kid');
    const k = await jwks.get(header.kid);
    if (k.alg !== header.alg) throw fail('invalid_token', 'bad_alg', 'the token algorithm does not match its key');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, k.key, {
        algorithms: [k.alg],
        typ: ACCESS_TOKEN_TYP,
        issuer,
        audience,
        currentDate: new Date(clock.now()),
        clockTolerance: tolerance,
        requiredClaims: ['exp', 'iat', 'jti', 'sub', 'client_id', 'sid', 'scope'],
      }));
    } catch (e) {
      if (e instanceof joseErrors.JWTExpired) throw fail('invalid_token', 'expired', 'the token has expired');
      if (e instanceof joseErrors.JWSSignatureVerificationFailed) throw fail('invalid_token', 'bad_signature', 'the token signature is invalid');
      if (e instanceof joseErrors.JWTClaimValidationFailed) {
        const reason =
          e.claim === 'aud'
            ? 'audience'
            : e.claim === 'iss'
              ? 'issuer'
              : e.claim === 'typ'
                ? 'bad_typ'
                : e.claim === 'nbf' || e.claim === 'iat'
                  ? 'not_yet_valid'
                  : 'claims';
        const msg =
          reason === 'audience'
            ? 'the token is not meant for this resource server (aud)'
            : reason === 'issuer'
              ? 'the token was not issued by the expected broker (iss)'
              : reason === 'bad_typ'
                ? `the token is not an access token (typ must be ${ACCESS_TOKEN_TYP})`
                : `token claim check failed: ${e.claim} ${e.reason}`;
        throw fail('invalid_token', reason, msg);
      }
      throw fail('invalid_token', 'malformed', 'the token could not be verified');
    }
    // Shared between requests from now on: nobody may change it (req.agent.claims is this object).
    deepFreeze(payload);
    if (cacheSize > 0) {
      if (verified.size >= cacheSize) verified.delete(verified.keys().next().value as string);
      verified.set(token, { payload, kid: header.kid, key: k });
    }
    return payload;
  }

  async function verify(input: VerifyInput): Promise<AgentIdentity> {
    const auth = input.authorization;
    if (!auth) throw fail('invalid_request', 'missing', 'no access token');
    const sp = auth.indexOf(' ');
    const scheme = sp > 0 ? auth.slice(0, sp).toLowerCase() : '';
    const token = sp > 0 ? auth.slice(sp + 1).trim() : '';
    if (scheme !== 'bearer' && scheme !== 'dpop') throw fail('invalid_request', 'malformed', 'the Authorization scheme must be Bearer or DPoP');
    if (!token || token.length > MAX_TOKEN || !TOKEN68.test(token) || !JWS.test(token))
      throw fail('invalid_token', 'malformed', 'the access token is not a compact JWS');
    const payload = await verifyJwt(token);
    // Revocation status must be known before anything is let through.
    if (feed.lastOkAt === -Infinity) await feed.first();
    if (feed.isStale(staleAfter)) {
      throw fail(
        'invalid_token',
        'feed_unavailable',
        `the token cannot be checked: the revocation feed could not be read${feed.lastError ? ` (${feed.lastError.message})` : ''}`,
      );
    }
    const { jti, sid, client_id: clientId, scope, sub } = payload as Record<string, unknown>;
    if (typeof jti !== 'string' || typeof sid !== 'string' || typeof clientId !== 'string' || typeof scope !== 'string' || typeof sub !== 'string')
      throw fail('invalid_token', 'claims', 'the token claims are malformed');
    const act = isObject(payload.act) ? (payload.act as unknown as ActClaim) : undefined;
    const chain = chainOf({ client_id: clientId, act, sub });
    if (feed.set.isRevoked(jti, sid, chain.includes(clientId) ? chain : [...chain, clientId]))
      throw fail('invalid_token', 'revoked', 'the token has been revoked');
    const cnf = payload.cnf as { jkt?: unknown } | undefined;
    const jkt = isObject(cnf) && typeof cnf.jkt === 'string' ? cnf.jkt : undefined;
    if (jkt) {
      if (scheme !== 'dpop') throw fail('invalid_token', 'dpop_required', 'the token is DPoP-bound: use the DPoP authorization scheme with a proof');
      await checkDpop(input.dpop, token, jkt, input.method, input.url);
    } else if (scheme === 'dpop') {
      throw fail('invalid_token', 'dpop_unbound', 'the token is not DPoP-bound: use the Bearer scheme');
    }
    const scopes = scope.split(' ').filter(Boolean);
    const missing = requiredScopes.filter((s) => !covers(scopes, s));
    if (missing.length) throw fail('insufficient_scope', 'scope', `the token lacks scope ${missing.join(' ')}`);
    return {
      client_id: clientId,
      sub,
      ...(act ? { act } : {}),
      chain,
      sid,
      jti,
      scope: scopes,
      ...(typeof payload.task === 'string' ? { task: payload.task } : {}),
      depth: typeof payload.cordon_depth === 'number' ? payload.cordon_depth : 0,
      exp: payload.exp as number,
      ...(jkt ? { jkt } : {}),
      claims: payload,
    };
  }

  return {
    verify,
    jwks,
    feed,
    requiredScopes,
    close() {
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
}
