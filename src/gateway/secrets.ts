/**
 * The backend credentials the gateway injects, issued per session through the same path as
 * `/credentials` (intent row, provider, audit row, revoked with the session) and kept in memory
 * only: until shortly before they expire, until the token that obtained them or its session is
 * revoked, or (for a static KV secret) for the credential's `ttl`. Never logged, never returned.
 */
import type { Broker } from '../broker.ts';
import type { Attempt } from '../audit/attempt.ts';
import { issueForRecord } from '../credentials/issue.ts';
import type { Revoked } from '../tokens/live-cache.ts';
import type { GatewayPrincipal } from './principal.ts';

export interface HeldSecret {
  /** The provider's answer (`client_token`, KV fields, STS keys): only injection reads it. */
  values: Record<string, unknown>;
  credentialId: string;
  /** Reuse until (ms, broker clock). */
  until: number;
  jti: string;
  sid: string;
}

/** Renew this long before a credential expires, so a call never carries one that dies in flight. */
const RENEW_BEFORE_MS = 60_000;
/** A static KV secret is re-read at least this often, so a rotation at Vault reaches calls. */
const STATIC_REREAD_MS = 300_000;

export class GatewaySecrets {
  readonly #b: Broker;
  readonly #held = new Map<string, HeldSecret>();
  readonly #inflight = new Map<string, Promise<HeldSecret>>();

  constructor(b: Broker) {
    this.#b = b;
  }

  get size(): number {
    return this.#held.size;
  }

  /** The credential `name` of the principal's session, issued on first use. */
  async get(p: GatewayPrincipal, name: string, attempt: Attempt): Promise<HeldSecret> {
    const key = `${p.view.sid}\u0000${name}`;
    const now = this.#b.clock.now();
    const held = this.#held.get(key);
    if (held && held.until > now) return held;
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#issue(p, name, attempt).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
    }
    const got = await pending;
    this.#held.set(key, got);
    return got;
  }

  async #issue(p: GatewayPrincipal, name: string, attempt: Attempt): Promise<HeldSecret> {
    const { response, credentialId } = await issueForRecord(this.#b, name, p.claims, p.view, p.chain, attempt, 'gateway');
    const now = this.#b.clock.now();
    const expires = Date.parse(response.expires_at);
    const spec = p.rootPolicy.credentials[name];
    const cacheFor = response.static ? Math.min(spec.ttl * 1000, STATIC_REREAD_MS) : expires - now - RENEW_BEFORE_MS;
    // A credential issued for a token nearly at its end is used for this call only.
    const until = Math.min(now + Math.max(0, cacheFor), expires);
    return { values: response.credentials, credentialId, until, jti: p.view.jti, sid: p.view.sid };
  }

  /** Forgets what a revocation named (the broker revokes the credentials themselves). */
  drop(r: Revoked): void {
    if (!r.sids.length && !r.jtis.length && !r.agents.length) return;
    const sids = new Set(r.sids);
    const jtis = new Set(r.jtis);
    // An agent revocation names no session here: forget everything rather than keep what may be dead.
    for (const [k, h] of this.#held) if (r.agents.length || sids.has(h.sid) || jtis.has(h.jti)) this.#held.delete(k);
  }
}
