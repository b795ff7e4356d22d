/**
 * What the soak watches in the broker process: memory and event-loop delay from its own /metrics
 * (prom-client's default process metrics, prefixed `cordon_process_`; the event-loop histogram restarts at every scrape, so
 * each sample's p99 covers the time since the previous one), RSS from /proc as well, and the row
 * counts of its SQLite file (a query-only connection beside the broker's, as WAL allows).
 */
import { readFileSync, statSync } from 'node:fs';
import knexFactory, { type Knex } from 'knex';

export interface Sample {
  at: number;
  rssBytes: number;
  heapUsedBytes: number;
  loopP99Ms: number;
}

/** A metric's value by its prom-client default name (the broker prefixes them `cordon_process_`). */
const metric = (text: string, name: string): number | undefined => {
  const m = new RegExp(`^(?:cordon_process_)?${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
};

/** Resident set size of a process from /proc (Linux), bytes. */
export function procRss(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export async function sample(brokerUrl: string, pid: number): Promise<Sample> {
  const text = await (await fetch(`${brokerUrl}/metrics`)).text();
  const rss = metric(text, 'process_resident_memory_bytes') ?? procRss(pid);
  const heap = metric(text, 'nodejs_heap_size_used_bytes');
  const loop = metric(text, 'nodejs_eventloop_lag_p99_seconds');
  if (rss === undefined || heap === undefined || loop === undefined) throw new Error('the broker /metrics lacks the default process metrics');
  return { at: Date.now(), rssBytes: rss, heapUsedBytes: heap, loopP99Ms: loop * 1000 };
}

export const TABLES = ['sessions', 'tokens', 'credentials', 'revocations', 'iam_denies', 'replay_guard', 'bootstrap_tokens', 'audit'] as const;
export type TableCounts = Record<(typeof TABLES)[number], number> & { fileMiB: number };

export class TableWatcher {
  readonly #db: Knex;
  constructor(private readonly file: string) {
    this.#db = knexFactory({
      client: 'sqlite3',
      connection: { filename: file },
      useNullAsDefault: true,
      pool: {
        min: 0,
        max: 1,
        afterCreate(conn: { exec: (sql: string, cb: (err: Error | null) => void) => void }, done: (err: Error | null, c: unknown) => void) {
          conn.exec('PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;', (err) => done(err, conn));
        },
      },
    });
  }
  async counts(): Promise<TableCounts> {
    const out: Partial<TableCounts> = {};
    for (const t of TABLES) out[t] = Number((await this.#db(t).count({ n: '*' }).first())!.n);
    let bytes = 0;
    for (const f of [this.file, `${this.file}-wal`]) {
      try {
        bytes += statSync(f).size;
      } catch {
        /* no WAL right now */
      }
    }
    return { ...(out as TableCounts), fileMiB: bytes / 2 ** 20 };
  }
  /**
   * Rows retention should have deleted: sessions that expired before `expiredBefore` (with their
   * tokens and credentials; no credential outlives its session's expiry), and feed entries whose
   * subject expired before `feedBefore`. (A session revoked earlier may wait until its expiry: a
   * credential its backend cannot revoke, such as a KV secret, keeps it until that credential expires.)
   */
  async overdue(expiredBefore: number, feedBefore: number): Promise<{ sessions: number; tokens: number; credentials: number; revocations: number }> {
    const n = async (q: Knex.QueryBuilder) => Number((await q.count({ n: '*' }).first())!.n);
    const old = this.#db('sessions').select('sid').where('expires_at', '<', expiredBefore);
    return {
      sessions: await n(this.#db('sessions').where('expires_at', '<', expiredBefore)),
      tokens: await n(this.#db('tokens').whereIn('sid', old)),
      credentials: await n(this.#db('credentials').whereIn('sid', old)),
      revocations: await n(this.#db('revocations').where('expires_at', '<', feedBefore)),
    };
  }
  close(): Promise<void> {
    return this.#db.destroy();
  }
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};

/**
 * Growth after warm-up: a statistic of the samples in the last `windowMs` over the same statistic
 * of those in the first `windowMs` after warm-up. Undefined when the run is too short to have both
 * windows apart. The soak takes the median for RSS and the minimum for the heap: heap use is a saw
 * tooth between collections, and its floor (what survives a collection) is what a leak raises.
 */
export function growth(
  samples: Sample[],
  warmupEnd: number,
  windowMs: number,
  pick: (s: Sample) => number,
  stat: (xs: number[]) => number,
): { from: number; to: number; ratio: number } | undefined {
  const after = samples.filter((s) => s.at >= warmupEnd);
  if (!after.length) return undefined;
  const last = after[after.length - 1].at;
  const first = after.filter((s) => s.at < warmupEnd + windowMs).map(pick);
  const end = after.filter((s) => s.at > last - windowMs && s.at >= warmupEnd + windowMs).map(pick);
  if (!first.length || !end.length) return undefined;
  const from = stat(first);
  const to = stat(end);
  return { from, to, ratio: to / from - 1 };
}
