import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { NextFunction, Request, Response } from 'express';
import { EmbeddedJWK, calculateJwkThumbprint, decodeProtectedHeader, errors as joseErrors, importJWK, jwtVerify, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { covers } from '../policy/scopes.ts';
import { chainOf, type ActClaim } from '../tokens/claims.ts';
import { requestJson, isObject, type FetchLike, type HttpOptions } from './http.ts';
import { CordonSdkError } from './errors.ts';

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

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      agent?: AgentIdentity;
    }
  }
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

export interface RequireAgentTokenOptions {
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
  /** Time for `exp`/`nbf`/`iat` and DPoP `iat` checks (ms since the epoch). */
  clock?: { now(): number };
  /** Leeway for time claims. Default 10 s. */
  clockToleranceSec?: number;
  /** Minimum time between JWKS fetches triggered by an unknown `kid`. Default 30 s. */
  jwksCooldownMs?: number;
  /** The JWKS is re-read in the background after this long. Default 10 min. */
  jwksMaxAgeMs?: number;
  /** A DPoP proof is accepted this long around its `iat`. Default 60 s. */
  dpopProofWindowSec?: number;
  /** The URL the client used (DPoP `htu`); default from the request (honours express `trust proxy`). */
  htu?: (req: Request) => string;
  realm?: string;
  fetch?: FetchLike;
  timeoutMs?: number;
  /**
   * Tokens whose signature and claims were verified are remembered (by their exact string) so a
   * client reusing its token costs a map lookup, not a signature check. Expiry, revocation, DPoP
   * and scope are still checked on every request; a JWKS reload forgets everything. 0 turns it off.
   * Default 1000.
   */
  verifiedCacheSize?: number;
  /** Called for every refusal (for logs and metrics); must not throw. */
  onRefuse?: (err: AgentTokenError, req: Request) => void;
  /** Called when the JWKS or the feed cannot be read. */
  onBackgroundError?: (err: Error) => void;
}

export interface AgentTokenMiddleware {
  (req: Request, res: Response, next: NextFunction): void;
  /** Verifies a token as the middleware would, without HTTP (for other frameworks and benchmarks). */
  verify(input: { authorization?: string; dpop?: string; method: string; url: string }): Promise<AgentIdentity>;
  /** Reads the revocation feed now (also done every pollIntervalMs). */
  pollNow(): Promise<void>;
  /** Resolves once the JWKS and the feed have been read once. */
  ready(): Promise<void>;
  /** Stops polling. */
  close(): void;
  readonly revocations: RevocationSet;
}

const SYMMETRIC = new Set(['oct']);
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
const DPOP_ALGS = ['ES256', 'EdDSA', 'RS256', 'PS256'];
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;
const JWS = /^[\w-]+\.[\w-]+\.[\w-]+$/;
const MAX_TOKEN = 8192;

function algOf(jwk: JWK): string | undefined {
  if (typeof jwk.alg === 'string') return jwk.alg;
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  return undefined;
}

/** The broker's public keys, cached, re-read on an unknown `kid` (rate-limited) and when old. */
export class JwksCache {
  readonly #http: HttpOptions;
  readonly #uri: string;
  readonly #algorithms: string[];
  readonly #cooldownMs: number;
  readonly #maxAgeMs: number;
  #keys = new Map<string, { key: CryptoKey; alg: string }>();
  #loadedAt = -Infinity;
  #lastAttempt = -Infinity;
  #inflight: Promise<void> | null = null;
  lastError: Error | null = null;
  readonly #onError?: (e: Error) => void;

  constructor(opts: { http: HttpOptions; uri: string; algorithms: string[]; cooldownMs: number; maxAgeMs: number; onError?: (e: Error) => void }) {
    this.#http = opts.http;
    this.#uri = opts.uri;
    this.#algorithms = opts.algorithms;
    this.#cooldownMs = opts.cooldownMs;
    this.#maxAgeMs = opts.maxAgeMs;
    this.#onError = opts.onError;
  }

  get loaded(): boolean {
    return this.#loadedAt > -Infinity;
  }

  /** Fetches now (single flight). Failures keep the keys already known. */
  refresh(): Promise<void> {
    this.#inflight ??= this.#load().finally(() => {
      this.#inflight = null;
    });
    return this.#inflight;
  }

  async #load(): Promise<void> {
    this.#lastAttempt = performance.now();
    try {
      const { body } = await requestJson(this.#http, this.#uri, { method: 'GET', headers: { accept: 'application/jwk-set+json, application/json' } }, 'JWKS');
      this.#keys = await this.#parse(body);
      this.#loadedAt = performance.now();
      this.lastError = null;
    } catch (e) {
      this.lastError = e as Error;
      this.#onError?.(e as Error);
    }
  }

  async #parse(body: unknown): Promise<Map<string, { key: CryptoKey; alg: string }>> {
    const bad = (why: string) => new CordonSdkError('bad_response', `JWKS: ${why}`);
    if (!isObject(body) || !Array.isArray(body.keys)) throw bad('not a JWK set ({"keys":[…]})');
    if (body.keys.length > 100) throw bad('more than 100 keys');
    const out = new Map<string, { key: CryptoKey; alg: string }>();
    for (const k of body.keys as unknown[]) {
      if (!isObject(k)) throw bad('a key is not an object');
      // A published symmetric or private key means the broker (or something in between) is badly wrong: trust none of it.
      if (SYMMETRIC.has(String(k.kty))) throw bad('holds a symmetric key (kty "oct"); refusing the whole set');
      if (PRIVATE_MEMBERS.some((m) => m in k)) throw bad('holds private key material; refusing the whole set');
      const jwk = k as JWK;
      if (typeof jwk.kid !== 'string' || !jwk.kid) continue;
      if (jwk.use !== undefined && jwk.use !== 'sig') continue;
      const alg = algOf(jwk);
      if (!alg || !this.#algorithms.includes(alg)) continue;
      try {
        out.set(jwk.kid, { key: (await importJWK(jwk, alg)) as CryptoKey, alg });
      } catch {
        /* a key we cannot use verifies nothing */
      }
    }
    if (!out.size) throw bad(`no usable key (algorithms allowed: ${this.#algorithms.join(', ')})`);
    return out;
  }

  /** The key for `kid` as loaded now, without fetching. */
  peek(kid: string): { key: CryptoKey; alg: string } | undefined {
    return this.#keys.get(kid);
  }

  /** The key for `kid`, fetching the set when it is unknown (at most once per cooldown) or old. */
  async get(kid: string): Promise<{ key: CryptoKey; alg: string }> {
    const now = performance.now();
    if (this.loaded && now - this.#loadedAt > this.#maxAgeMs && now - this.#lastAttempt > this.#cooldownMs) void this.refresh();
    let k = this.#keys.get(kid);
    if (k) return k;
    // Unknown kid: re-read the set, but at most once per cooldown (once a second while nothing could be loaded yet).
    if (now - this.#lastAttempt >= (this.loaded ? this.#cooldownMs : Math.min(1000, this.#cooldownMs))) {
      await this.refresh();
      k = this.#keys.get(kid);
      if (k) return k;
    } else if (this.#inflight) {
      await this.#inflight;
      k = this.#keys.get(kid);
      if (k) return k;
    }
    if (!this.loaded) throw new AgentTokenError('invalid_token', 'jwks_unavailable', `the token cannot be verified: the broker's keys could not be read (${this.lastError?.message ?? 'unknown error'})`);
    throw new AgentTokenError('invalid_token', 'unknown_kid', 'the token was not signed by a key the broker publishes');
  }
}

interface FeedEntry {
  kind: 'jti' | 'sid' | 'agent';
  value: string;
  exp: number;
}

/** Revoked token ids, sessions and agents, each kept until its `exp`: O(1) checks. */
export class RevocationSet {
  readonly jtis = new Map<string, number>();
  readonly sids = new Map<string, number>();
  readonly agents = new Map<string, number>();

  add(e: FeedEntry): void {
    const m = e.kind === 'jti' ? this.jtis : e.kind === 'sid' ? this.sids : this.agents;
    m.set(e.value, Math.max(m.get(e.value) ?? 0, e.exp));
  }

  /**
   * Forgets entries whose subject has expired anyway (their tokens fail on `exp`). Give the time
   * minus the clock tolerance: a token is still accepted until `exp + tolerance`.
   */
  purge(nowSec: number): void {
    for (const m of [this.jtis, this.sids, this.agents]) for (const [k, exp] of m) if (exp < nowSec) m.delete(k);
  }

  isRevoked(jti: string, sid: string, agents: readonly string[]): boolean {
    if (this.jtis.has(jti) || this.sids.has(sid)) return true;
    if (this.agents.size) for (const a of agents) if (this.agents.has(a)) return true;
    return false;
  }

  get size(): number {
    return this.jtis.size + this.sids.size + this.agents.size;
  }
}

/** Follows `GET /revocations?since=cursor`. */
class RevocationFeed {
  readonly set = new RevocationSet();
  cursor = 0;
  lastOkAt = -Infinity;
  lastError: Error | null = null;
  #inflight: Promise<void> | null = null;
  #first: Promise<void> | null = null;
  readonly #http: HttpOptions;
  readonly #uri: string;
  readonly #nowSec: () => number;
  readonly #toleranceSec: number;
  readonly #onError?: (e: Error) => void;

  constructor(opts: { http: HttpOptions; uri: string; nowSec: () => number; toleranceSec: number; onError?: (e: Error) => void }) {
    this.#http = opts.http;
    this.#uri = opts.uri;
    this.#nowSec = opts.nowSec;
    this.#toleranceSec = opts.toleranceSec;
    this.#onError = opts.onError;
  }

  poll(): Promise<void> {
    this.#inflight ??= this.#pollPages().finally(() => {
      this.#inflight = null;
    });
    this.#first ??= this.#inflight;
    return this.#inflight;
  }

  /** Resolves after the first poll finished (whatever its outcome). */
  first(): Promise<void> {
    return this.#first ?? this.poll();
  }

  async #pollPages(): Promise<void> {
    try {
      for (let page = 0; page < 100; page++) {
        const u = new URL(this.#uri);
        u.searchParams.set('since', String(this.cursor));
        const { body } = await requestJson(this.#http, u.toString(), { method: 'GET', headers: { accept: 'application/json' } }, 'revocation feed');
        const p = parsePage(body);
        for (const e of p.revoked) this.set.add(e);
        if (p.cursor < this.cursor) throw new CordonSdkError('bad_response', `revocation feed: cursor went backwards (${p.cursor} < ${this.cursor})`);
        const moved = p.cursor !== this.cursor;
        this.cursor = p.cursor;
        if (!p.more || !moved) break;
      }
      // Kept while a token could still pass `exp` within the clock tolerance.
      this.set.purge(this.#nowSec() - this.#toleranceSec);
      this.lastOkAt = performance.now();
      this.lastError = null;
    } catch (e) {
      this.lastError = e as Error;
      this.#onError?.(e as Error);
    }
  }
}

function parsePage(body: unknown): { cursor: number; more: boolean; revoked: FeedEntry[] } {
  const bad = (why: string) => new CordonSdkError('bad_response', `revocation feed: ${why}`);
  if (!isObject(body)) throw bad('the answer is not a JSON object');
  const { cursor, more, revoked } = body;
  if (typeof cursor !== 'number' || !Number.isSafeInteger(cursor) || cursor < 0) throw bad('cursor is not a whole number');
  if (typeof more !== 'boolean') throw bad('more is not a boolean');
  if (!Array.isArray(revoked)) throw bad('revoked is not a list');
  const out: FeedEntry[] = [];
  for (const r of revoked as unknown[]) {
    if (!isObject(r)) throw bad('an entry is not an object');
    if (r.kind !== 'jti' && r.kind !== 'sid' && r.kind !== 'agent') throw bad(`unknown entry kind ${JSON.stringify(r.kind)}`);
    if (typeof r.value !== 'string' || !r.value || r.value.length > 256) throw bad('an entry has no value');
    if (typeof r.exp !== 'number' || !Number.isFinite(r.exp)) throw bad('an entry has no exp');
    out.push({ kind: r.kind, value: r.value, exp: r.exp });
  }
  return { cursor, more, revoked: out };
}

function deepFreeze(o: unknown, depth = 0): void {
  if (typeof o !== 'object' || o === null || depth > 16) return;
  Object.freeze(o);
  for (const v of Object.values(o)) deepFreeze(v, depth + 1);
}

const quote = (s: string): string => s.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, "'");

const normalizeUrl = (u: string): string | null => {
  try {
    const x = new URL(u);
    return `${x.protocol}//${x.host}${x.pathname}`;
  } catch {
    return null;
  }
};

/**
 * Express middleware for resource servers: verifies Cordon access tokens offline against the
 * broker's JWKS, follows the revocation feed, checks DPoP proofs for bound tokens, and puts
 * the caller on `req.agent`. Anything it cannot verify is refused (401/403 with a
 * `WWW-Authenticate` challenge per RFC 6750 / RFC 9449).
 */
export function requireAgentToken(opts: RequireAgentTokenOptions): AgentTokenMiddleware {
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
  const realm = opts.realm ?? audience[0];
  const http: HttpOptions = { fetch: opts.fetch ?? ((i, init) => fetch(i, init)), timeoutMs: opts.timeoutMs ?? 5000 };
  const jwks = new JwksCache({ http, uri: opts.jwksUri ?? `${issuer}/jwks`, algorithms, cooldownMs: opts.jwksCooldownMs ?? 30_000, maxAgeMs: opts.jwksMaxAgeMs ?? 600_000, onError: opts.onBackgroundError });
  const feed = new RevocationFeed({ http, uri: opts.revocationsUri ?? `${issuer}/revocations`, nowSec: () => Math.floor(clock.now() / 1000), toleranceSec: tolerance, onError: opts.onBackgroundError });
  const seenProofs = new Map<string, number>();
  const cacheSize = opts.verifiedCacheSize ?? 1000;
  const verified = new Map<string, { payload: JWTPayload; kid: string; key: { key: CryptoKey; alg: string } }>();

  const purgeProofs = (): void => {
    const now = clock.now();
    for (const [k, exp] of seenProofs) if (exp < now) seenProofs.delete(k);
  };
  let timer: NodeJS.Timeout | null = setInterval(() => {
    void feed.poll();
    purgeProofs();
  }, pollIntervalMs);
  timer.unref();
  void feed.poll();
  void jwks.refresh();

  const fail = (code: AgentTokenErrorCode, reason: string, msg: string) => new AgentTokenError(code, reason, msg);

  async function checkDpop(proof: string | undefined, token: string, jkt: string, method: string, url: string): Promise<void> {
    if (proof === undefined) throw fail('invalid_dpop_proof', 'dpop_required', 'the token is DPoP-bound: send a DPoP proof');
    if (proof.length > 4096 || !JWS.test(proof)) throw fail('invalid_dpop_proof', 'dpop_invalid', 'the DPoP header is not one compact JWS');
    let header;
    try {
      header = decodeProtectedHeader(proof);
    } catch {
      throw fail('invalid_dpop_proof', 'dpop_invalid', 'the DPoP proof header is not valid JSON');
    }
    if (!DPOP_ALGS.includes(header.alg as string)) throw fail('invalid_dpop_proof', 'dpop_invalid', `DPoP proof algorithm ${JSON.stringify(header.alg)} is not allowed`);
    const jwk = header.jwk as Record<string, unknown> | undefined;
    if (!isObject(jwk) || SYMMETRIC.has(String(jwk.kty)) || PRIVATE_MEMBERS.some((m) => m in jwk)) throw fail('invalid_dpop_proof', 'dpop_invalid', 'the DPoP proof must carry a public asymmetric jwk');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(proof, EmbeddedJWK, { algorithms: DPOP_ALGS, typ: 'dpop+jwt', currentDate: new Date(clock.now()), clockTolerance: tolerance, requiredClaims: ['iat', 'jti', 'htm', 'htu'] }));
    } catch (e) {
      if (e instanceof joseErrors.JWSSignatureVerificationFailed) throw fail('invalid_dpop_proof', 'dpop_invalid', 'the DPoP proof signature is invalid');
      throw fail('invalid_dpop_proof', 'dpop_invalid', `the DPoP proof could not be verified (${(e as Error).message.slice(0, 80)})`);
    }
    if (payload.htm !== method) throw fail('invalid_dpop_proof', 'dpop_mismatch', 'DPoP proof htm does not match the request method');
    const htu = typeof payload.htu === 'string' ? normalizeUrl(payload.htu) : null;
    if (htu === null || htu !== normalizeUrl(url)) throw fail('invalid_dpop_proof', 'dpop_mismatch', 'DPoP proof htu does not match the request URL');
    const nowSec = clock.now() / 1000;
    const iat = payload.iat as number;
    if (Math.abs(nowSec - iat) > window + tolerance) throw fail('invalid_dpop_proof', 'dpop_invalid', 'DPoP proof iat is outside the accepted window');
    if (typeof payload.jti !== 'string' || payload.jti.length < 8 || payload.jti.length > 128) throw fail('invalid_dpop_proof', 'dpop_invalid', 'DPoP proof jti is missing or malformed');
    if (payload.ath !== createHash('sha256').update(token).digest('base64url')) throw fail('invalid_dpop_proof', 'dpop_mismatch', 'DPoP proof ath does not match the access token');
    const thumb = await calculateJwkThumbprint(jwk as JWK);
    if (thumb !== jkt) throw fail('invalid_token', 'dpop_mismatch', 'the DPoP proof key is not the key the token is bound to');
    const key = `${thumb}:${payload.jti}`;
    if (seenProofs.has(key)) throw fail('invalid_dpop_proof', 'dpop_replay', 'the DPoP proof has been used before');
    if (seenProofs.size > 100_000) purgeProofs();
    seenProofs.set(key, (iat + window + 2 * tolerance) * 1000);
  }

  /** Signature and claims, or the cached result of an earlier verification of the very same token. */
  async function verifyJwt(token: string): Promise<JWTPayload> {
    const hit = verified.get(token);
    if (hit) {
      const nowSec = clock.now() / 1000;
      // Still signed by a key the broker publishes (a JWKS reload drops every entry), still in its time window.
      if (jwks.peek(hit.kid) === hit.key && (hit.payload.exp as number) > nowSec - tolerance && ((hit.payload.nbf as number | undefined) ?? 0) <= nowSec + tolerance) {
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
    if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) throw fail('invalid_token', 'bad_alg', `token algorithm ${JSON.stringify(header.alg)} is not allowed`);
    if (typeof header.kid !== 'string' || !header.kid) throw fail('invalid_token', 'no_kid', 'the token header has no kid');
    const k = await jwks.get(header.kid);
    if (k.alg !== header.alg) throw fail('invalid_token', 'bad_alg', 'the token algorithm does not match its key');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, k.key, {
        algorithms: [k.alg],
        typ: 'at+jwt',
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
        const reason = e.claim === 'aud' ? 'audience' : e.claim === 'iss' ? 'issuer' : e.claim === 'typ' ? 'bad_typ' : e.claim === 'nbf' || e.claim === 'iat' ? 'not_yet_valid' : 'claims';
        const msg = reason === 'audience' ? 'the token is not meant for this resource server (aud)' : reason === 'issuer' ? 'the token was not issued by the expected broker (iss)' : reason === 'bad_typ' ? 'the token is not an access token (typ must be at+jwt)' : `token claim check failed: ${e.claim} ${e.reason}`;
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

  async function verify(input: { authorization?: string; dpop?: string; method: string; url: string }): Promise<AgentIdentity> {
    const auth = input.authorization;
    if (!auth) throw fail('invalid_request', 'missing', 'no access token');
    const sp = auth.indexOf(' ');
    const scheme = sp > 0 ? auth.slice(0, sp).toLowerCase() : '';
    const token = sp > 0 ? auth.slice(sp + 1).trim() : '';
    if (scheme !== 'bearer' && scheme !== 'dpop') throw fail('invalid_request', 'malformed', 'the Authorization scheme must be Bearer or DPoP');
    if (!token || token.length > MAX_TOKEN || !TOKEN68.test(token) || !JWS.test(token)) throw fail('invalid_token', 'malformed', 'the access token is not a compact JWS');
    const payload = await verifyJwt(token);
    // Revocation status must be known before anything is let through.
    if (feed.lastOkAt === -Infinity) await feed.first();
    if (performance.now() - feed.lastOkAt > staleAfter) {
      throw fail('invalid_token', 'feed_unavailable', `the token cannot be checked: the revocation feed could not be read${feed.lastError ? ` (${feed.lastError.message})` : ''}`);
    }
    const { jti, sid, client_id: clientId, scope, sub } = payload as Record<string, unknown>;
    if (typeof jti !== 'string' || typeof sid !== 'string' || typeof clientId !== 'string' || typeof scope !== 'string' || typeof sub !== 'string') throw fail('invalid_token', 'claims', 'the token claims are malformed');
    const act = isObject(payload.act) ? (payload.act as unknown as ActClaim) : undefined;
    const chain = chainOf({ client_id: clientId, act, sub });
    if (feed.set.isRevoked(jti, sid, chain.includes(clientId) ? chain : [...chain, clientId])) throw fail('invalid_token', 'revoked', 'the token has been revoked');
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

  const challenge = (err: AgentTokenError | null, scheme: 'bearer' | 'dpop' | null): string[] => {
    const params = (e: AgentTokenError | null) => (e ? `, error="${e.code}", error_description="${quote(e.message)}"${e.code === 'insufficient_scope' ? `, scope="${quote(requiredScopes.join(' '))}"` : ''}` : '');
    const bearer = `Bearer realm="${quote(realm)}"`;
    const dpop = `DPoP algs="${DPOP_ALGS.join(' ')}"`;
    // RFC 6750 §3.1: no error code when the request carried no credentials at all.
    if (!err || err.reason === 'missing') return [bearer, dpop];
    const useDpop = scheme === 'dpop' || err.code === 'invalid_dpop_proof' || err.reason === 'dpop_required';
    return useDpop ? [`${dpop}${params(err)}`] : [`${bearer}${params(err)}`];
  };

  const htuOf = opts.htu ?? ((req: Request) => `${req.protocol}://${req.get('host') ?? 'localhost'}${req.originalUrl.split('?')[0]}`);

  const mw = ((req: Request, res: Response, next: NextFunction): void => {
    const authorization = req.headers.authorization;
    const dpopHeader = req.headers.dpop;
    const scheme = /^dpop /i.test(authorization ?? '') ? 'dpop' : /^bearer /i.test(authorization ?? '') ? 'bearer' : null;
    const run = async (): Promise<AgentIdentity> => {
      if (Array.isArray(dpopHeader) || (typeof dpopHeader === 'string' && dpopHeader.includes(','))) throw fail('invalid_dpop_proof', 'dpop_invalid', 'exactly one DPoP header is allowed');
      return verify({ authorization, dpop: dpopHeader, method: req.method, url: htuOf(req) });
    };
    run().then(
      (agent) => {
        req.agent = agent;
        next();
      },
      (e: unknown) => {
        const err = e instanceof AgentTokenError ? e : fail('invalid_token', 'malformed', 'the token could not be verified');
        try {
          opts.onRefuse?.(err, req);
        } catch {
          /* a logging hook must not change the answer */
        }
        res.setHeader('WWW-Authenticate', challenge(err, scheme));
        res.setHeader('Cache-Control', 'no-store');
        if (err.reason === 'missing') {
          res.status(401).end();
          return;
        }
        res.status(err.status).json({ error: err.code, error_description: err.message });
      },
    );
  }) as AgentTokenMiddleware;

  mw.verify = verify;
  mw.pollNow = () => feed.poll();
  mw.ready = async () => {
    await Promise.all([feed.first(), jwks.loaded ? Promise.resolve() : jwks.refresh()]);
  };
  mw.close = () => {
    if (timer) clearInterval(timer);
    timer = null;
  };
  Object.defineProperty(mw, 'revocations', { get: () => feed.set });
  return mw;
}
