/**
 * Token liveness from memory, for checks on every call (the gateway): a token's record is read
 * once, kept while it is live, and dropped the moment a revocation names it, its session or an
 * agent of its chain. Revocations are learned from the process's own commits at once (the
 * onRevoked hook) and from every other writer (another replica, the CLI) by polling the
 * revocation feed's sequence. Until the poll has succeeded within `staleMs`, nothing is answered
 * from memory: every check goes to the database, so a feed that cannot be read fails to the slow,
 * correct path, never to a stale "active".
 */
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { revocations } from '../store/revocations.ts';
import { agents } from '../store/agents.ts';
import { chainAgents } from '../store/liveness.ts';
import type { Policy } from '../policy/types.ts';
import { parseScope } from '../policy/scopes.ts';
import { chainOf, type AccessTokenClaims } from './claims.ts';
import { loadTokenView, recordClaims, requireActiveRecord, stateOf, type TokenView } from './verify.ts';

/** A live token as the broker recorded it, with what decisions about its calls need. */
export interface LiveToken {
  claims: AccessTokenClaims;
  view: TokenView;
  /** Agent ids from the session's root to the holder. */
  chain: string[];
  scopes: string[];
  rootPolicy: Policy;
  /** The policy of every agent along the chain, root first. */
  chainPolicies: Policy[];
  /** The token's exp or the session's end, whichever comes first (ms). */
  expiresAt: number;
}

/** What a revocation named: the cache drops these, and listeners close what they hold open for them. */
export interface Revoked {
  sids: string[];
  jtis: string[];
  agents: string[];
}

interface Entry {
  live: LiveToken;
  /** The exact JWT string last checked against the record: the same string needs no second comparison. */
  jwt: string | undefined;
}

const WHY: Record<string, string> = {
  expired: 'token has expired',
  session_expired: 'the session of this token has ended',
  revoked: 'token has been revoked',
  session_revoked: 'the session of this token has been revoked',
  agent_inactive: 'an agent in the chain of this token is disabled or revoked',
};

const SWEEP_MS = 10_000;

export class LiveTokenCache {
  readonly #b: Broker;
  readonly #pollMs: number;
  readonly #staleMs: number;
  readonly #entries = new Map<string, Entry>();
  readonly #bySid = new Map<string, Set<string>>();
  /** Token strings already verified against their record, to their jti: the same string needs no second signature check. */
  readonly #byJwt = new Map<string, string>();
  #sweptAt = 0;
  readonly #listeners: Array<(r: Revoked) => void> = [];
  #cursor = -1;
  /** performance.now() of the last poll that succeeded (an operational timer, not the decision clock). */
  #polledAt = -Infinity;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;
  readonly #hook: (r: { sids: string[]; jtis: string[] }) => Promise<void>;

  constructor(b: Broker, opts: { pollMs?: number; staleMs?: number } = {}) {
    this.#b = b;
    this.#pollMs = opts.pollMs ?? 250;
    this.#staleMs = opts.staleMs ?? 1000;
    this.#hook = async (r) => this.#drop({ sids: r.sids, jtis: r.jtis, agents: [] });
  }

  /** Starts polling from the feed's current end; revocations committed by this process are seen at once. */
  async start(): Promise<void> {
    this.#cursor = await revocations.lastSeq(this.#b.read);
    this.#polledAt = performance.now();
    this.#b.hooks.onRevoked.push(this.#hook);
    this.#timer = setInterval(() => void this.poll(), this.#pollMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    const i = this.#b.hooks.onRevoked.indexOf(this.#hook);
    if (i >= 0) this.#b.hooks.onRevoked.splice(i, 1);
    await this.#polling;
  }

  /** Called with what each revocation named, after the cache has dropped it. */
  onRevoked(f: (r: Revoked) => void): void {
    this.#listeners.push(f);
  }

  /** True when memory may answer: the feed was read within `staleMs`. */
  get current(): boolean {
    return this.#cursor >= 0 && performance.now() - this.#polledAt <= this.#staleMs;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Reads the feed once (the timer calls this; tests may too). Concurrent calls share one read. */
  poll(): Promise<void> {
    this.#polling ??= this.#pollOnce().finally(() => (this.#polling = undefined));
    return this.#polling;
  }

  async #pollOnce(): Promise<void> {
    try {
      for (;;) {
        const started = performance.now();
        const rows = await revocations.since(this.#b.read, this.#cursor, 1000);
        const r: Revoked = { sids: [], jtis: [], agents: [] };
        for (const row of rows) (row.kind === 'jti' ? r.jtis : row.kind === 'sid' ? r.sids : r.agents).push(row.value);
        if (rows.length) {
          this.#drop(r);
          this.#cursor = rows[rows.length - 1].seq;
        }
        this.#polledAt = started;
        if (started - this.#sweptAt > SWEEP_MS) this.#sweep(started);
        if (rows.length < 1000) return;
      }
    } catch (e) {
      // Memory stops answering once the last good poll is older than staleMs: checks go to the database.
      this.#b.log.warn({ err: (e as Error).message }, 'revocation feed poll failed; token checks read the database until it recovers');
    }
  }

  #drop(r: Revoked): void {
    for (const jti of r.jtis) this.#forget(jti);
    for (const sid of r.sids) for (const jti of [...(this.#bySid.get(sid) ?? [])]) this.#forget(jti);
    if (r.agents.length) {
      const gone = new Set(r.agents);
      for (const [jti, e] of this.#entries) if (e.live.chain.some((a) => gone.has(a))) this.#forget(jti);
    }
    for (const f of this.#listeners) {
      try {
        f(r);
      } catch (e) {
        this.#b.log.error({ err: (e as Error).message }, 'a revocation listener failed');
      }
    }
  }

  /** Drops tokens past their end, so memory holds live tokens only. */
  #sweep(at: number): void {
    this.#sweptAt = at;
    const now = this.#b.clock.now();
    for (const [jti, e] of this.#entries) if (!stateOf(e.live.view, now).active) this.#forget(jti);
  }

  #forget(jti: string): void {
    const e = this.#entries.get(jti);
    if (!e) return;
    this.#entries.delete(jti);
    if (e.jwt !== undefined) this.#byJwt.delete(e.jwt);
    const set = this.#bySid.get(e.live.view.sid);
    set?.delete(jti);
    if (set && !set.size) this.#bySid.delete(e.live.view.sid);
  }

  /**
   * A token string this cache has verified before and still holds live: its record, with no
   * second signature check (the string is byte for byte the one verified). Undefined otherwise,
   * and the caller takes the full path, which names the reason for a refusal.
   */
  known(jwt: string): LiveToken | undefined {
    if (!this.current) return undefined;
    const jti = this.#byJwt.get(jwt);
    const e = jti === undefined ? undefined : this.#entries.get(jti);
    if (!e || e.jwt !== jwt) return undefined;
    return stateOf(e.live.view, this.#b.clock.now()).active ? e.live : undefined;
  }

  /**
   * The live token for a verified JWT (`presented`, `jwt`) or, for a gateway key, for a jti the
   * gateway vouches for itself (`presented` undefined: there are no presented claims to compare).
   * Throws CordonError invalid_token with the record's reason when the token is not live.
   */
  async check(jti: string, presented?: AccessTokenClaims, jwt?: string): Promise<LiveToken> {
    const now = this.#b.clock.now();
    const hit = this.current ? this.#entries.get(jti) : undefined;
    if (hit && (presented === undefined || hit.jwt === jwt)) {
      const state = stateOf(hit.live.view, now);
      if (state.active) return hit.live;
      this.#forget(jti);
      throw new CordonError('invalid_token', WHY[state.why] ?? 'token is not active', { reason: `token_${state.why}` });
    }
    // The record decides (and raises the alarm for a signed token that differs from it).
    const view = await requireActiveRecord(this.#b, presented ?? (await this.#recordOf(jti)), 'invalid_token');
    const live = await this.#build(view);
    if (this.current && stateOf(view, this.#b.clock.now()).active) {
      const old = this.#entries.get(jti);
      if (old?.jwt !== undefined) this.#byJwt.delete(old.jwt);
      this.#entries.set(jti, { live, jwt });
      if (jwt !== undefined) this.#byJwt.set(jwt, jti);
      let set = this.#bySid.get(view.sid);
      if (!set) this.#bySid.set(view.sid, (set = new Set()));
      set.add(jti);
    }
    return live;
  }

  /** For a jti the gateway vouches for: the record's own claims stand in for presented ones. */
  async #recordOf(jti: string): Promise<AccessTokenClaims> {
    const view = await loadTokenView(this.#b, jti);
    if (!view) throw new CordonError('invalid_token', 'token is not known to this broker', { reason: 'token_unknown' });
    return recordClaims(this.#b, view);
  }

  async #build(view: TokenView): Promise<LiveToken> {
    const claims = recordClaims(this.#b, view);
    const chain = chainOf(claims, view.sessionAgentId);
    const rootPolicy = this.#b.policies.get(view.rootPolicy);
    if (!rootPolicy)
      throw new CordonError('invalid_token', `the session's root policy "${view.rootPolicy}" is not loaded on this broker`, { reason: 'policy_missing' });
    const chainPolicies: Policy[] = [];
    for (const id of chainAgents(view)) {
      const a = id === view.sessionAgentId ? { policy: view.rootPolicy } : await agents.get(this.#b.read, id);
      const p = a ? this.#b.policies.get(a.policy) : undefined;
      // A link whose policy is not loaded allows nothing: fail closed rather than skip it.
      if (!p) throw new CordonError('invalid_token', 'a policy along the chain of this token is not loaded on this broker', { reason: 'policy_missing' });
      chainPolicies.push(p);
    }
    return {
      claims,
      view,
      chain,
      scopes: parseScope(view.scope),
      rootPolicy,
      chainPolicies,
      expiresAt: Math.min(view.expiresAt, view.sessionExpiresAt),
    };
  }
}
