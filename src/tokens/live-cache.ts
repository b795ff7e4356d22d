/**
 * Token liveness from memory, one per broker (b.live), for checks on every call: introspection,
 * `/credentials` and the gateway. A token's record is read once, kept while it is live, and
 * dropped the moment a revocation names it, its session or an agent of its chain (an agent
 * disabled or enabled too). Revocations are learned from the process's own commits at once (the
 * onRevoked hook), and from every other writer (another replica, the CLI) through the revocation
 * feed: on PostgreSQL each revoking transaction notifies at commit and a dedicated connection
 * listens (milliseconds), and the feed's sequence is polled besides (bounded, and the only way on
 * SQLite). Memory answers only while the view is known to be current: started, the last poll
 * within `staleMs`, and on PostgreSQL the listening connection up (and polled since it came
 * back). Otherwise every check goes to the database, so a feed that cannot be read fails to the
 * slow, correct path, never to a stale "active". Only live tokens are held: nothing negative can
 * go stale (an agent enabled again is simply read again).
 */
import type { Broker } from '../broker.ts';
import { CordonError, type OAuthErrorCode } from '../errors.ts';
import { revocations } from '../store/revocations.ts';
import { listenForRevocations, type RevocationListener } from '../store/revocation-listener.ts';
import { AgentCache } from '../agents/agent-cache.ts';
import { chainAgents } from '../store/liveness.ts';
import type { Policy } from '../policy/types.ts';
import { parseScope } from '../policy/scopes.ts';
import { chainOf, type AccessTokenClaims } from './claims.ts';
import { WHY_TEXT, loadTokenView, recordClaims, requireActiveRecord, stateOf, verifySignature, type TokenView } from './verify.ts';

/** A live token as the broker recorded it, with what decisions about its calls need. */
export interface LiveToken {
  claims: AccessTokenClaims;
  view: TokenView;
  /** Agent ids from the session's root to the holder. */
  chain: string[];
  scopes: string[];
  /** The token's exp or the session's end, whichever comes first (ms). */
  expiresAt: number;
}

/** A live token with the policies that bound its calls (the gateway's principal). */
export interface LivePrincipal extends LiveToken {
  rootPolicy: Policy;
  /** The policy of every agent along the chain, root first. */
  chainPolicies: Policy[];
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

const SWEEP_MS = 10_000;
const PAGE = 1000;

export class LiveTokenCache {
  readonly #b: Broker;
  readonly #pollMs: number;
  readonly #staleMs: number;
  readonly #listen: boolean;
  readonly #entries = new Map<string, Entry>();
  readonly #bySid = new Map<string, Set<string>>();
  /** Token strings already verified against their record, to their jti: the same string needs no second signature check. */
  readonly #byJwt = new Map<string, string>();
  /** Policies resolved once per live token (the gateway's principal). */
  readonly #principals = new WeakMap<LiveToken, LivePrincipal>();
  #sweptAt = 0;
  readonly #listeners: Array<(r: Revoked) => void> = [];
  #cursor = -1;
  /** Bumped by every drop: a record read before a drop is not kept (it may predate the revocation). */
  #epoch = 0;
  /** performance.now() at the start of the last poll that succeeded (an operational timer, not the decision clock). */
  #polledAt = -Infinity;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;
  /** A poll asked for while one was under way: it runs after, so it reads what committed since the ask. */
  #next: Promise<void> | undefined;
  #users = 0;
  #starting: Promise<void> | undefined;
  #listener: RevocationListener | undefined;
  /** PostgreSQL: the listening connection is up, since this performance.now() (-1: down). */
  #listeningSince = -1;
  readonly #hook: (r: { sids: string[]; jtis: string[] }) => Promise<void>;
  /** Agent rows, kept current by the same feed. */
  readonly agents = new AgentCache(this);

  constructor(b: Broker, opts: { pollMs?: number; staleMs?: number; listen?: boolean } = {}) {
    this.#b = b;
    this.#pollMs = opts.pollMs ?? 250;
    this.#staleMs = opts.staleMs ?? 1000;
    this.#listen = opts.listen ?? true;
    this.#hook = async (r) => this.#drop({ sids: r.sids, jtis: r.jtis, agents: [] });
  }

  /**
   * Starts following the feed from its current end (once per broker: every front door that uses
   * the cache starts it, and it runs until the last of them stops it). Until started, every check
   * reads the database (one-shot CLI commands never start it).
   */
  async start(): Promise<void> {
    if (this.#users++ === 0) this.#starting = this.#begin();
    try {
      await this.#starting;
    } catch (e) {
      this.#users--;
      throw e;
    }
  }

  async #begin(): Promise<void> {
    this.#cursor = await revocations.lastSeq(this.#b.read);
    this.#polledAt = performance.now();
    // First in line: memory forgets before slower hooks (backend cleanup) run.
    this.#b.hooks.onRevoked.unshift(this.#hook);
    this.#timer = setInterval(() => void this.poll(), this.#pollMs);
    this.#timer.unref();
    if (!this.#listen) return;
    this.#listener = listenForRevocations(this.#b.db, {
      onNotify: () => void this.poll(),
      onState: (up, err) => {
        if (!up) {
          this.#listeningSince = -1;
          this.#b.log.warn({ err: err?.message }, 'revocation listener lost; token checks read the database until it is back');
          return;
        }
        // Anything committed while deaf is read before memory answers again.
        this.#listeningSince = performance.now();
        void this.poll();
      },
    });
  }

  /** Stops following the feed when the last user stops; memory stops answering. */
  async stop(): Promise<void> {
    if (this.#users === 0 || --this.#users > 0) return;
    await this.#starting?.catch(() => {});
    clearInterval(this.#timer);
    this.#timer = undefined;
    const i = this.#b.hooks.onRevoked.indexOf(this.#hook);
    if (i >= 0) this.#b.hooks.onRevoked.splice(i, 1);
    this.#cursor = -1;
    this.#listeningSince = -1;
    await this.#listener?.close();
    this.#listener = undefined;
    await this.#next;
    await this.#polling;
    this.#clear();
  }

  #clear(): void {
    this.#epoch++;
    this.#entries.clear();
    this.#bySid.clear();
    this.#byJwt.clear();
    this.agents.clear();
  }

  /** Stops it whatever the count: the broker is closing. */
  async close(): Promise<void> {
    if (this.#users === 0) return;
    this.#users = 1;
    await this.stop();
  }

  /** Calls `f` with what each revocation named, after the cache has dropped it; returns what stops that. */
  onRevoked(f: (r: Revoked) => void): () => void {
    this.#listeners.push(f);
    return () => {
      const i = this.#listeners.indexOf(f);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }

  /** True when memory may answer (see the top of this file). */
  get current(): boolean {
    if (this.#cursor < 0 || performance.now() - this.#polledAt > this.#staleMs) return false;
    return !this.#listener || (this.#listeningSince >= 0 && this.#polledAt >= this.#listeningSince);
  }

  get epoch(): number {
    return this.#epoch;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * Reads the feed (the timer and notifications call this; tests may too). Resolves after a read
   * that started after the call: one under way when called is followed by one more, shared by
   * every caller meanwhile.
   */
  poll(): Promise<void> {
    if (this.#cursor < 0) return Promise.resolve();
    if (this.#polling) {
      this.#next ??= this.#polling.then(() => {
        this.#next = undefined;
        return this.poll();
      });
      return this.#next;
    }
    this.#polling = this.#pollOnce().finally(() => (this.#polling = undefined));
    return this.#polling;
  }

  async #pollOnce(): Promise<void> {
    try {
      for (;;) {
        const started = performance.now();
        const rows = await revocations.since(this.#b.read, this.#cursor, PAGE);
        if (this.#cursor < 0) return; // stopped meanwhile
        // After a long gap the feed may have been pruned past the cursor: start memory afresh.
        if (started - this.#polledAt > this.#staleMs) this.#clear();
        const r: Revoked = { sids: [], jtis: [], agents: [] };
        const changed: string[] = [];
        for (const row of rows) (row.kind === 'jti' ? r.jtis : row.kind === 'sid' ? r.sids : row.kind === 'agent' ? r.agents : changed).push(row.value);
        if (rows.length) {
          this.#drop(r, changed);
          this.#cursor = rows[rows.length - 1].seq;
        }
        this.#polledAt = started;
        if (started - this.#sweptAt > SWEEP_MS) this.#sweep(started);
        if (rows.length < PAGE) return;
      }
    } catch (e) {
      // Memory stops answering once the last good poll is older than staleMs: checks go to the database.
      this.#b.log.warn({ err: (e as Error).message }, 'revocation feed poll failed; token checks read the database until it recovers');
    }
  }

  /**
   * This process changed these agents' rows (disable, enable): their tokens are read again. The
   * feed row written with the change tells every other replica.
   */
  agentsChanged(ids: string[]): void {
    this.#drop({ sids: [], jtis: [], agents: [] }, ids);
  }

  /** Drops what `r` names and tells the listeners; `changed` agents' tokens are dropped too, silently (nothing was revoked). */
  #drop(r: Revoked, changed: string[] = []): void {
    this.#epoch++;
    for (const jti of r.jtis) this.#forget(jti);
    for (const sid of r.sids) for (const jti of [...(this.#bySid.get(sid) ?? [])]) this.#forget(jti);
    if (r.agents.length || changed.length) {
      const gone = new Set([...r.agents, ...changed]);
      this.agents.forget(gone);
      for (const [jti, e] of this.#entries) if (e.live.chain.some((a) => gone.has(a))) this.#forget(jti);
    }
    if (!r.sids.length && !r.jtis.length && !r.agents.length) return;
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
   * Signature, then liveness, for a token presented as a credential: a string seen live before is
   * answered from memory; anything else is verified (`verified` learns the presented claims before
   * the record is read) and checked against its record. Throws CordonError `code` when it is not live.
   */
  async require(jwt: unknown, code: OAuthErrorCode, verified?: (presented: AccessTokenClaims) => void): Promise<LiveToken> {
    const known = typeof jwt === 'string' ? this.known(jwt) : undefined;
    if (known) return known;
    const presented = await verifySignature(this.#b, jwt, code);
    verified?.(presented);
    return this.check(presented.jti, presented, jwt as string, code);
  }

  /**
   * The live token for a verified JWT (`presented`, `jwt`) or, for a gateway key, for a jti the
   * gateway vouches for itself (`presented` undefined: there are no presented claims to compare).
   * Throws CordonError `code` with the record's reason when the token is not live.
   */
  async check(jti: string, presented?: AccessTokenClaims, jwt?: string, code: OAuthErrorCode = 'invalid_token'): Promise<LiveToken> {
    const now = this.#b.clock.now();
    const hit = this.current ? this.#entries.get(jti) : undefined;
    if (hit && (presented === undefined || hit.jwt === jwt)) {
      const state = stateOf(hit.live.view, now);
      if (state.active) return hit.live;
      this.#forget(jti);
      throw new CordonError(code, WHY_TEXT[state.why], { reason: `token_${state.why}` });
    }
    const epoch = this.#epoch;
    // The record decides (and raises the alarm for a signed token that differs from it).
    const view = await requireActiveRecord(this.#b, presented ?? (await this.#recordOf(jti)), code);
    const live = this.#build(view);
    // Kept only if no revocation was learned while the record was read: it may have been read before that commit.
    if (this.current && epoch === this.#epoch && stateOf(view, this.#b.clock.now()).active) {
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

  #build(view: TokenView): LiveToken {
    const claims = recordClaims(this.#b, view);
    return {
      claims,
      view,
      chain: chainOf(claims, view.sessionAgentId),
      scopes: parseScope(view.scope),
      expiresAt: Math.min(view.expiresAt, view.sessionExpiresAt),
    };
  }

  /**
   * The policies that bound a live token's calls (the gateway's principal), resolved once per
   * cached token. An agent's policy never changes after registration, so nothing invalidates them.
   */
  async withPolicies(live: LiveToken): Promise<LivePrincipal> {
    const known = this.#principals.get(live);
    if (known) return known;
    const { view } = live;
    const rootPolicy = this.#b.policies.get(view.rootPolicy);
    if (!rootPolicy)
      throw new CordonError('invalid_token', `the session's root policy "${view.rootPolicy}" is not loaded on this broker`, { reason: 'policy_missing' });
    const chainPolicies: Policy[] = [];
    for (const id of chainAgents(view)) {
      const a = id === view.sessionAgentId ? { policy: view.rootPolicy } : await this.agents.get(this.#b.read, id);
      const p = a ? this.#b.policies.get(a.policy) : undefined;
      // A link whose policy is not loaded allows nothing: fail closed rather than skip it.
      if (!p) throw new CordonError('invalid_token', 'a policy along the chain of this token is not loaded on this broker', { reason: 'policy_missing' });
      chainPolicies.push(p);
    }
    const principal: LivePrincipal = { ...live, rootPolicy, chainPolicies };
    this.#principals.set(live, principal);
    return principal;
  }
}
