import type { Clock } from '../clock.ts';

/**
 * Bounds how many audit rows refusals that name no known agent can write. Per client address and
 * window, the first `perWindow` refusals are written one by one as usual; the rest are only counted,
 * and written as one summary row per address when the window ends. Anyone can send junk, and the
 * audit chain is append-only: without this, a loop of garbage requests grows it without bound.
 * Refusals of known agents never come here (a denial is logged as carefully as a grant).
 */
export interface RefusalLimits {
  /** Refusals written one by one per address and window (default 20). */
  perWindow: number;
  /** Window length in ms on the injected clock (default 60 s). */
  windowMs: number;
  /** Addresses tracked at once; refusals from any further address share one bucket (default 10,000). */
  maxAddresses: number;
  /** Distinct reasons counted per bucket; further ones count as `other` (default 16). */
  maxReasons: number;
}

export const DEFAULT_REFUSAL_LIMITS: RefusalLimits = { perWindow: 20, windowMs: 60_000, maxAddresses: 10_000, maxReasons: 16 };

/** The bucket refusals from untracked addresses share once `maxAddresses` are tracked. */
export const SHARED_BUCKET = 'other';

/** What one summary row says: `count` refusals from `address` in the window were not written one by one. */
export interface RefusalSummary {
  address: string;
  count: number;
  windowStart: number;
  windowEnd: number;
  /** Most frequent first, at most five. */
  topReasons: Array<{ reason: string; count: number }>;
}

/** Runs `fn` once after `ms` of real time without keeping the process alive; returns how to cancel it. */
export type Schedule = (fn: () => void, ms: number) => () => void;

const unrefTimer: Schedule = (fn, ms) => {
  const t = setTimeout(fn, ms);
  t.unref();
  return () => clearTimeout(t);
};

interface Bucket {
  windowStart: number;
  written: number;
  suppressed: number;
  reasons: Map<string, number>;
}

export class RefusalLimiter {
  readonly #clock: Clock;
  readonly #limits: RefusalLimits;
  readonly #write: (s: RefusalSummary) => Promise<void>;
  readonly #onError: (e: unknown) => void;
  readonly #buckets = new Map<string, Bucket>();
  /** Summary writes under way, awaited by close(). */
  readonly #pending = new Set<Promise<void>>();
  /** The earliest end of a tracked window, so admit() scans the buckets only when one has ended. */
  #nextEnd = Infinity;
  readonly #schedule: Schedule;
  #cancelTimer: (() => void) | undefined;
  #closed = false;

  constructor(opts: {
    clock: Clock;
    write: (s: RefusalSummary) => Promise<void>;
    onError?: (e: unknown) => void;
    limits?: Partial<RefusalLimits>;
    schedule?: Schedule;
  }) {
    this.#clock = opts.clock;
    this.#schedule = opts.schedule ?? unrefTimer;
    this.#write = opts.write;
    this.#onError = opts.onError ?? (() => {});
    this.#limits = { ...DEFAULT_REFUSAL_LIMITS, ...opts.limits };
  }

  /**
   * One refusal from `address`: true when its row is to be written as usual, false when it was
   * counted for the window's summary instead. `reason` is a short stable tag (an error code).
   */
  admit(address: string, reason: string): boolean {
    if (this.#closed) return true; // stopping: nothing more is held back in memory
    const now = this.#clock.now();
    if (now >= this.#nextEnd) this.flushEnded();
    let key = address;
    let bucket = this.#buckets.get(key);
    if (!bucket && this.#buckets.size >= this.#limits.maxAddresses) {
      key = SHARED_BUCKET;
      bucket = this.#buckets.get(key);
    }
    if (!bucket) {
      bucket = { windowStart: now, written: 0, suppressed: 0, reasons: new Map() };
      this.#buckets.set(key, bucket);
      this.#nextEnd = Math.min(this.#nextEnd, now + this.#limits.windowMs);
    }
    if (bucket.written < this.#limits.perWindow) {
      bucket.written += 1;
      return true;
    }
    bucket.suppressed += 1;
    const tag = bucket.reasons.has(reason) || bucket.reasons.size < this.#limits.maxReasons ? reason : 'other';
    bucket.reasons.set(tag, (bucket.reasons.get(tag) ?? 0) + 1);
    this.#arm();
    return false;
  }

  /** Writes the summaries of the windows that have ended and forgets those buckets. */
  flushEnded(): void {
    this.#flush(this.#clock.now(), false);
  }

  /** At stop: every bucket's summary so far is written (its window cut short), and awaited. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    this.#flush(this.#clock.now(), true);
    while (this.#pending.size) await Promise.all([...this.#pending]);
  }

  /** Addresses tracked now (for tests of the bound). */
  get tracked(): number {
    return this.#buckets.size;
  }

  #flush(now: number, all: boolean): void {
    let nextEnd = Infinity;
    for (const [address, bucket] of this.#buckets) {
      const end = bucket.windowStart + this.#limits.windowMs;
      if (!all && now < end) {
        nextEnd = Math.min(nextEnd, end);
        continue;
      }
      this.#buckets.delete(address);
      if (bucket.suppressed === 0) continue;
      const topReasons = [...bucket.reasons]
        .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
        .slice(0, 5)
        .map(([reason, count]) => ({ reason, count }));
      const p = this.#write({ address, count: bucket.suppressed, windowStart: bucket.windowStart, windowEnd: Math.min(end, now), topReasons })
        .catch(this.#onError)
        .finally(() => this.#pending.delete(p));
      this.#pending.add(p);
    }
    this.#nextEnd = nextEnd;
  }

  /**
   * An unref'd timer flushes a window that ends while no further refusal comes (it never keeps the
   * process alive). It runs on real time and asks the clock whether the window has ended.
   */
  #arm(): void {
    if (this.#cancelTimer || this.#closed) return;
    const delay = Math.min(Math.max(this.#nextEnd - this.#clock.now(), 1000), this.#limits.windowMs);
    this.#cancelTimer = this.#schedule(() => {
      this.#cancelTimer = undefined;
      this.flushEnded();
      if ([...this.#buckets.values()].some((bk) => bk.suppressed > 0)) this.#arm();
    }, delay);
  }
}

/**
 * The address a refusal is counted against: IPv4 as is (also when IPv4-mapped), IPv6 by its /64,
 * since one IPv6 host usually holds a whole /64 and could otherwise rotate through it.
 */
export function clientAddressOf(raw: string | undefined): string {
  if (!raw) return 'unknown';
  const v4 = /^(?:::ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(raw);
  if (v4) return v4[1];
  if (!raw.includes(':')) return raw.slice(0, 64);
  const [head, tail = ''] = raw.toLowerCase().split('%')[0].split('::');
  const left = head ? head.split(':') : [];
  const right = raw.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = [...left, ...Array(Math.max(8 - left.length - right.length, 0)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
