import { createRemoteJWKSet, customFetch, errors as joseErrors, type CryptoKey, type JWK } from 'jose';
import { CordonSdkError } from './errors.ts';
import { AgentTokenError } from './agent-token-error.ts';
import { requestJson, isObject, type HttpOptions } from './http.ts';

/** Members only a private or symmetric key has: a published set holding one is badly wrong. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
const MAX_KEYS = 100;

function algOf(jwk: JWK): string | undefined {
  if (typeof jwk.alg === 'string') return jwk.alg;
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  return undefined;
}

/**
 * Checks a JWK set before jose parses it: a set holding a symmetric or private key is refused
 * whole; keys without a `kid`, not for signing or of an algorithm not allowed are dropped.
 */
export function usableJwks(body: unknown, algorithms: readonly string[]): { keys: JWK[] } {
  const bad = (why: string) => new CordonSdkError('bad_response', `JWKS: ${why}`);
  if (!isObject(body) || !Array.isArray(body.keys)) throw bad('not a JWK set ({"keys":[…]})');
  if (body.keys.length > MAX_KEYS) throw bad(`more than ${MAX_KEYS} keys`);
  const keys: JWK[] = [];
  for (const k of body.keys as unknown[]) {
    if (!isObject(k)) throw bad('a key is not an object');
    if (k.kty === 'oct') throw bad('holds a symmetric key (kty "oct"); refusing the whole set');
    if (PRIVATE_MEMBERS.some((m) => m in k)) throw bad('holds private key material; refusing the whole set');
    const jwk = k as JWK;
    if (typeof jwk.kid !== 'string' || !jwk.kid) continue;
    if (jwk.use !== undefined && jwk.use !== 'sig') continue;
    const alg = algOf(jwk);
    if (!alg || !algorithms.includes(alg)) continue;
    keys.push({ ...jwk, alg });
  }
  if (!keys.length) throw bad(`no usable key (algorithms allowed: ${algorithms.join(', ')})`);
  return { keys };
}

export interface JwksCacheOptions {
  http: HttpOptions;
  uri: string;
  algorithms: string[];
  /** Minimum time between fetches triggered by an unknown `kid`. */
  cooldownMs: number;
  /** The set is re-read in the background once it is this old. */
  maxAgeMs: number;
  /** Decides cooldown and age (ms since the epoch). Default: the system clock. */
  clock?: { now(): number };
  onError?: (e: Error) => void;
}

/**
 * The broker's public keys, on jose's `createRemoteJWKSet`. jose fetches (through a fetch that
 * validates the set first, see `usableJwks`), selects and imports keys; when to fetch is decided
 * here, on the injected clock: on an unknown `kid` at most once per cooldown (once a second while
 * nothing could be loaded yet), in the background when the set is old. A failed fetch keeps the
 * keys already known; with none known, nothing verifies (fail closed).
 */
export class JwksCache {
  readonly #set: ReturnType<typeof createRemoteJWKSet>;
  readonly #cooldownMs: number;
  readonly #maxAgeMs: number;
  readonly #clock: { now(): number };
  readonly #onError?: (e: Error) => void;
  /** Keys handed out since the last load, by kid: the same object until the set is re-read. */
  #keys = new Map<string, { key: CryptoKey; alg: string }>();
  #loadedAt = -Infinity;
  #lastAttempt = -Infinity;
  #inflight: Promise<void> | null = null;
  lastError: Error | null = null;

  constructor(opts: JwksCacheOptions) {
    this.#cooldownMs = opts.cooldownMs;
    this.#maxAgeMs = opts.maxAgeMs;
    this.#clock = opts.clock ?? { now: () => Date.now() };
    this.#onError = opts.onError;
    const http = opts.http;
    const algorithms = [...opts.algorithms];
    this.#set = createRemoteJWKSet(new URL(opts.uri), {
      // jose never decides to fetch on its own once loaded: refresh() does, on the injected clock.
      cooldownDuration: Infinity,
      cacheMaxAge: Infinity,
      timeoutDuration: Math.ceil(http.timeoutMs) + 1000, // requestJson times the fetch itself; this only bounds jose's wait
      [customFetch]: async (url: string) => {
        const { body } = await requestJson(http, url, { method: 'GET', headers: { accept: 'application/jwk-set+json, application/json' } }, 'JWKS');
        return new Response(JSON.stringify(usableJwks(body, algorithms)), { status: 200, headers: { 'content-type': 'application/json' } });
      },
    });
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

  /** Resolves when no fetch is in progress. */
  async settled(): Promise<void> {
    while (this.#inflight) await this.#inflight;
  }

  async #load(): Promise<void> {
    this.#lastAttempt = this.#clock.now();
    try {
      await this.#set.reload();
      this.#keys = new Map();
      this.#loadedAt = this.#clock.now();
      this.lastError = null;
    } catch (e) {
      this.lastError = e as Error;
      this.#onError?.(e as Error);
    }
  }

  /** The key for `kid` as handed out since the last load, without fetching or importing. */
  peek(kid: string): { key: CryptoKey; alg: string } | undefined {
    return this.#keys.get(kid);
  }

  /** The key for `kid`, fetching the set when it is unknown (at most once per cooldown) or old. */
  async get(kid: string): Promise<{ key: CryptoKey; alg: string }> {
    const now = this.#clock.now();
    if (this.loaded && now - this.#loadedAt >= this.#maxAgeMs && now - this.#lastAttempt >= this.#cooldownMs) void this.refresh();
    let k = await this.#lookup(kid);
    if (k) return k;
    if (now - this.#lastAttempt >= (this.loaded ? this.#cooldownMs : Math.min(1000, this.#cooldownMs))) {
      await this.refresh();
      k = await this.#lookup(kid);
      if (k) return k;
    } else if (this.#inflight) {
      await this.#inflight;
      k = await this.#lookup(kid);
      if (k) return k;
    }
    if (!this.loaded)
      throw new AgentTokenError(
        'invalid_token',
        'jwks_unavailable',
        `the token cannot be verified: the broker's keys could not be read (${this.lastError?.message ?? 'unknown error'})`,
      );
    throw new AgentTokenError('invalid_token', 'unknown_kid', 'the token was not signed by a key the broker publishes');
  }

  async #lookup(kid: string): Promise<{ key: CryptoKey; alg: string } | undefined> {
    if (!this.loaded) return undefined;
    const known = this.#keys.get(kid);
    if (known) return known;
    const jwk = this.#set.jwks()?.keys.find((x) => x.kid === kid);
    const alg = jwk?.alg;
    if (!alg) return undefined;
    const keys = this.#keys;
    let key: CryptoKey;
    try {
      key = await this.#set({ alg, kid });
    } catch (e) {
      // No single usable key under that kid (two keys share it, or it cannot be imported): it verifies nothing.
      if (e instanceof joseErrors.JOSEError) return undefined;
      throw e;
    }
    const out = keys.get(kid) ?? { key, alg };
    keys.set(kid, out);
    return out;
  }
}
