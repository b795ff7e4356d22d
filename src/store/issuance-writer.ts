import { type Db, type Q, retryTransient, transact } from './db.ts';
import { statesAtCommit } from './liveness.ts';
import { CordonError } from '../errors.ts';
import { sessions, type Session } from './sessions.ts';
import { tokens, type TokenRecord } from './tokens.ts';
import { credentials, type PendingCredential } from './credentials.ts';
import { appendAuditMany, type AuditEntry } from './audit-chain.ts';

/** One issued token's records: committed together or not at all. */
export interface IssuanceRecord {
  /** The session this token opens, when it opens one. */
  session?: Session;
  token: TokenRecord;
  audit: AuditEntry;
  /** A condition that must still hold when the records commit (e.g. the parent token is unrevoked); throws to refuse. */
  precheck?: (tx: Q) => Promise<void>;
}

/**
 * A backend credential its provider has issued: its intent row becomes `issued` with its audit
 * row, after a last look at the token it was issued to (under a row lock on PostgreSQL), so a
 * revocation that committed meanwhile is never missed.
 */
export interface CredentialRecord {
  credentialId: string;
  /** The token the credential was issued to. */
  jti: string;
  handle: Record<string, unknown>;
  expiresAt: number;
  /** The audit row, given whether the token and its session were still live at commit. */
  audit: (live: boolean) => AuditEntry;
}

/**
 * `issued`: recorded and returned. `token_revoked`: recorded, but the token died meanwhile (the
 * caller revokes it at once). `claimed`: orphan recovery (or a revocation) took the intent first;
 * nothing written.
 */
export type CredentialOutcome = 'issued' | 'token_revoked' | 'claimed';

type Job =
  | { kind: 'step'; step: (tx: Q) => Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void }
  | { kind: 'token'; record: IssuanceRecord; resolve: (v: void) => void; reject: (e: unknown) => void }
  | { kind: 'credential'; record: CredentialRecord; resolve: (v: CredentialOutcome) => void; reject: (e: unknown) => void }
  | { kind: 'audit'; entry: AuditEntry; resolve: (v: void) => void; reject: (e: unknown) => void };
type Outcome = { job: Job; error: unknown } | { job: Job; value: unknown };

/**
 * Group commit for issuance. Concurrent issues queue while a transaction runs and the next
 * transaction writes them all: one multi-row insert per table and one read of the audit chain
 * head instead of one transaction each. Every token still commits in the same transaction as its
 * session and audit row, every credential with its audit row, and a record is acknowledged only
 * after its commit. A batch that fails as a whole is retried record by record, so one bad record
 * fails alone. On SQLite's single connection this is what keeps concurrent issues from queueing
 * behind each other's transactions.
 */
export class IssuanceWriter {
  readonly #db: Db;
  readonly #now: () => number;
  readonly #maxBatch: number;
  #queue: Job[] = [];
  #draining = false;

  constructor(db: Db, now: () => number, maxBatch = 64) {
    this.#db = db;
    this.#now = now;
    this.#maxBatch = maxBatch;
  }

  write(record: IssuanceRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => this.#enqueue({ kind: 'token', record, resolve, reject }));
  }

  recordCredential(record: CredentialRecord): Promise<CredentialOutcome> {
    return new Promise<CredentialOutcome>((resolve, reject) => this.#enqueue({ kind: 'credential', record, resolve, reject }));
  }

  /**
   * An audit row that records something already done (a call through the gateway), appended with
   * the next batch: many such rows share one transaction and one fsync instead of one each.
   */
  appendAudit(entry: AuditEntry): Promise<void> {
    return new Promise<void>((resolve, reject) => this.#enqueue({ kind: 'audit', entry, resolve, reject }));
  }

  /** Resolves once every job queued so far has been committed or failed (before the database closes). */
  async idle(): Promise<void> {
    while (this.#draining || this.#queue.length) await new Promise((r) => setImmediate(r));
  }

  /** Jobs waiting for the next transaction (for back-pressure: the gateway refuses calls when it grows too long). */
  get pending(): number {
    return this.#queue.length;
  }

  /**
   * A credential's intent row, committed (with the next batch) before the caller calls the backend.
   * Fails alone if the row cannot be written.
   */
  insertCredentialIntent(row: PendingCredential): Promise<void> {
    return this.#step((tx) => credentials.insertPending(tx, row));
  }

  /** Names what to revoke on the intent row; false when the intent is no longer pending (claimed by recovery). */
  checkpointCredential(id: string, handle: Record<string, unknown>): Promise<boolean> {
    return this.#step((tx) => credentials.checkpoint(tx, id, handle));
  }

  /**
   * One SQL statement, committed with the next batch instead of on its own. A step that fails
   * fails its batch, which is then retried job by job, so only that step fails; it may run more
   * than once and only ever touches `tx`. Alone in a batch it runs without a transaction: a single
   * statement is atomic by itself.
   */
  #step<T>(step: (tx: Q) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => this.#enqueue({ kind: 'step', step, resolve: resolve as (v: unknown) => void, reject }));
  }

  #enqueue(job: Job): void {
    this.#queue.push(job);
    if (!this.#draining) void this.#drain();
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

  #settle(outcomes: Outcome[]): void {
    for (const o of outcomes) {
      if ('error' in o) o.job.reject(o.error);
      else (o.job.resolve as (v: unknown) => void)(o.value);
    }
  }

  /** Writes the batch in one transaction; records whose precheck fails are left out and reported. */
  async #commit(batch: Job[]): Promise<Outcome[]> {
    if (batch.length === 1 && batch[0].kind === 'step')
      return [{ job: batch[0], value: await retryTransient(() => (batch[0] as Extract<Job, { kind: 'step' }>).step(this.#db)) }];
    const outcomes: Outcome[] = [];
    await transact(this.#db, async (tx) => {
      outcomes.length = 0;
      for (const job of batch) if (job.kind === 'step') outcomes.push({ job, value: await job.step(tx) });
      const audit: AuditEntry[] = [];
      const issued: Array<IssuanceRecord> = [];
      for (const job of batch) {
        if (job.kind !== 'token') continue;
        try {
          await job.record.precheck?.(tx);
        } catch (error) {
          // Only a refusal belongs to this record; a database error (a PostgreSQL deadlock aborts the
          // whole transaction) fails the batch, which is then retried record by record.
          if (!(error instanceof CordonError)) throw error;
          outcomes.push({ job, error });
          continue;
        }
        issued.push(job.record);
        audit.push(job.record.audit);
        outcomes.push({ job, value: undefined });
      }
      await sessions.insertMany(
        tx,
        issued.flatMap((r) => (r.session ? [r.session] : [])),
      );
      await tokens.insertMany(
        tx,
        issued.map((r) => r.token),
      );

      const creds = batch.filter((j): j is Extract<Job, { kind: 'credential' }> => j.kind === 'credential');
      if (creds.length) {
        const states = await statesAtCommit(
          tx,
          creds.map((j) => j.record.jti),
          this.#now(),
        );
        const live = new Set([...states].filter(([, st]) => st.active).map(([jti]) => jti));
        for (const job of creds) {
          const r = job.record;
          if (!(await credentials.markIssued(tx, r.credentialId, { handle: r.handle, expiresAt: r.expiresAt }))) {
            // An earlier try of this batch may have committed after all (its reply was lost): then the
            // row is issued, unrevoked, with exactly this handle, and its audit row is there already.
            const row = await credentials.get(tx, r.credentialId);
            const landed = row?.state === 'issued' && row.revokedAt === null && JSON.stringify(row.handle) === JSON.stringify(r.handle);
            outcomes.push({ job, value: landed ? (live.has(r.jti) ? 'issued' : 'token_revoked') : 'claimed' });
            continue;
          }
          // Recorded either way (it exists at the backend); a credential of a dead token is revoked right after, never returned.
          audit.push(r.audit(live.has(r.jti)));
          outcomes.push({ job, value: live.has(r.jti) ? 'issued' : 'token_revoked' });
        }
      }
      for (const job of batch) {
        if (job.kind !== 'audit') continue;
        audit.push(job.entry);
        outcomes.push({ job, value: undefined });
      }
      await appendAuditMany(tx, audit);
    });
    return outcomes;
  }
}
