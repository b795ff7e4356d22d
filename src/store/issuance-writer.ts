import { type Db, type Q, transact } from './db.ts';
import { CordonError } from '../errors.ts';
import { sessions, type Session } from './sessions.ts';
import { tokens, type TokenRecord } from './tokens.ts';
import { appendAuditMany, type AuditEntry } from '../audit/log.ts';

/** One issued token's records: committed together or not at all. */
export interface IssuanceRecord {
  /** The session this token opens, when it opens one. */
  session?: Session;
  token: TokenRecord;
  audit: AuditEntry;
  /** A condition that must still hold when the records commit (e.g. the parent token is unrevoked); throws to refuse. */
  precheck?: (tx: Q) => Promise<void>;
}

interface Job {
  record: IssuanceRecord;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Group commit for issuance. Concurrent issues queue while a transaction runs and the next
 * transaction writes them all: one multi-row insert per table and one read of the audit chain
 * head instead of one transaction each. Every token still commits in the same transaction as its
 * session and audit row, and a record is acknowledged only after its commit. A batch that fails
 * as a whole is retried record by record, so one bad record fails alone.
 */
export class IssuanceWriter {
  readonly #db: Db;
  readonly #maxBatch: number;
  #queue: Job[] = [];
  #draining = false;

  constructor(db: Db, maxBatch = 64) {
    this.#db = db;
    this.#maxBatch = maxBatch;
  }

  write(record: IssuanceRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ record, resolve, reject });
      if (!this.#draining) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, this.#maxBatch);
        try {
          this.#settle(await this.#commit(batch));
        } catch {
          for (const job of batch) {
            try {
              this.#settle(await this.#commit([job]));
            } catch (e) {
              job.reject(e);
            }
          }
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  #settle(outcomes: Array<{ job: Job; error?: unknown }>): void {
    for (const { job, error } of outcomes) {
      if (error === undefined) job.resolve();
      else job.reject(error);
    }
  }

  /** Writes the batch in one transaction; records whose precheck fails are left out and reported. */
  async #commit(batch: Job[]): Promise<Array<{ job: Job; error?: unknown }>> {
    const outcomes: Array<{ job: Job; error?: unknown }> = [];
    await transact(this.#db, async (tx) => {
      outcomes.length = 0;
      const ok: Job[] = [];
      for (const job of batch) {
        try {
          await job.record.precheck?.(tx);
          ok.push(job);
        } catch (error) {
          // Only a refusal belongs to this record; a database error (a PostgreSQL deadlock aborts the
          // whole transaction) fails the batch, which is then retried record by record.
          if (!(error instanceof CordonError)) throw error;
          outcomes.push({ job, error });
        }
      }
      await sessions.insertMany(tx, ok.flatMap((j) => (j.record.session ? [j.record.session] : [])));
      await tokens.insertMany(tx, ok.map((j) => j.record.token));
      await appendAuditMany(tx, ok.map((j) => j.record.audit));
      for (const job of ok) outcomes.push({ job });
    });
    return outcomes;
  }
}
