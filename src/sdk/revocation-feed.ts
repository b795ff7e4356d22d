import { CordonSdkError } from './errors.ts';
import { requestJson, isObject, type HttpOptions } from './http.ts';

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

/** Follows `GET /revocations?since=cursor`. Times come from the injected clock. */
export class RevocationFeed {
  readonly set = new RevocationSet();
  cursor = 0;
  /** When the feed was last read in full (ms, injected clock); -Infinity before that. */
  lastOkAt = -Infinity;
  lastError: Error | null = null;
  #inflight: Promise<void> | null = null;
  #first: Promise<void> | null = null;
  /** Reads started and finished, so nextPoll() can wait for one that starts after it is called. */
  #started = 0;
  #finished = 0;
  #waiters: Array<{ after: number; resolve: () => void }> = [];
  readonly #http: HttpOptions;
  readonly #uri: string;
  readonly #clock: { now(): number };
  readonly #toleranceSec: number;
  readonly #onError?: (e: Error) => void;

  constructor(opts: { http: HttpOptions; uri: string; clock: { now(): number }; toleranceSec: number; onError?: (e: Error) => void }) {
    this.#http = opts.http;
    this.#uri = opts.uri;
    this.#clock = opts.clock;
    this.#toleranceSec = opts.toleranceSec;
    this.#onError = opts.onError;
  }

  /** Reads the feed now (single flight: joins a read in progress). */
  poll(): Promise<void> {
    this.#inflight ??= this.#pollPages().finally(() => {
      this.#inflight = null;
      this.#finished++;
      const done = this.#waiters.filter((w) => w.after < this.#finished);
      this.#waiters = this.#waiters.filter((w) => w.after >= this.#finished);
      for (const w of done) w.resolve();
    });
    this.#first ??= this.#inflight;
    return this.#inflight;
  }

  /** Resolves after the first poll finished (whatever its outcome). */
  first(): Promise<void> {
    return this.#first ?? this.poll();
  }

  /** Resolves once a read that starts after this call has finished (whatever its outcome). */
  nextPoll(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push({ after: this.#started, resolve }));
  }

  /** The feed has not been read for longer than `staleAfterMs` (or never). */
  isStale(staleAfterMs: number): boolean {
    return this.#clock.now() - this.lastOkAt > staleAfterMs;
  }

  async #pollPages(): Promise<void> {
    this.#started++;
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
      this.set.purge(Math.floor(this.#clock.now() / 1000) - this.#toleranceSec);
      this.lastOkAt = this.#clock.now();
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
