import { type Q, isPostgres, num, numOrNull } from './db.ts';

/**
 * Backend credentials the broker issued (tables `credentials` and `iam_denies`, migrations 001 and 002).
 *
 * States: pending (intent written, backend called or about to be) → issued | failed;
 * issued → revoked | revoke_failed (→ revoked on a later retry). Every transition is a
 * conditional UPDATE on the current state, so two replicas (or the revocation hook and the
 * sweeper) never both act on one row: whoever's UPDATE changes the row owns the work.
 * `revoked_at` is when revocation was requested (for revoke_failed: the last attempt). An
 * issued row with `revoked_at` set is one the backend cannot revoke (STS without
 * revoke_via_iam): it is alive until `expires_at`. `handle` is JSON without secrets.
 */
export type CredentialState = 'pending' | 'issued' | 'revoked' | 'revoke_failed' | 'failed';

export interface CredentialRow {
  id: string;
  sid: string;
  jti: string;
  agentId: string;
  name: string;
  provider: string;
  handle: Record<string, any> | null;
  state: CredentialState;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
  note: string | null;
}

const fromRow = (r: Record<string, unknown>): CredentialRow => ({
  id: r.id as string,
  sid: r.sid as string,
  jti: r.jti as string,
  agentId: r.agent_id as string,
  name: r.name as string,
  provider: r.provider as string,
  handle: r.handle ? JSON.parse(r.handle as string) : null,
  state: r.state as CredentialState,
  createdAt: num(r.created_at),
  expiresAt: num(r.expires_at),
  revokedAt: numOrNull(r.revoked_at),
  note: (r.note as string | null) ?? null,
});

const CHUNK = 400;
const clip = (s: string | null | undefined): string | null => (s == null ? null : s.length > 500 ? `${s.slice(0, 499)}…` : s);

/** A credential's intent, written before its backend is called: a row before its state. */
export type PendingCredential = Pick<CredentialRow, 'id' | 'sid' | 'jti' | 'agentId' | 'name' | 'provider' | 'createdAt' | 'expiresAt'> & { handle?: Record<string, unknown> | null };

export const credentials = {
  /**
   * Credentials not yet expired, by what is known of them: `live` (issued, never revoked),
   * `revocation_unenforced` (revocation recorded, but the backend — STS without revoke_via_iam —
   * cannot kill it) and `revoke_failed` (not yet confirmed dead; the sweeper retries).
   */
  async unexpired(q: Q, now: number, which: 'live' | 'revocation_unenforced' | 'revoke_failed'): Promise<CredentialRow[]> {
    let b = q('credentials').where('expires_at', '>', now);
    if (which === 'live') b = b.where({ state: 'issued' }).whereNull('revoked_at');
    else if (which === 'revocation_unenforced') b = b.where({ state: 'issued' }).whereNotNull('revoked_at');
    else b = b.where({ state: 'revoke_failed' });
    return (await b.orderBy('sid').orderBy('expires_at')).map(fromRow);
  },
  async insertPending(q: Q, c: PendingCredential): Promise<void> {
    await q('credentials').insert({
      id: c.id,
      sid: c.sid,
      jti: c.jti,
      agent_id: c.agentId,
      name: c.name,
      provider: c.provider,
      handle: c.handle ? JSON.stringify(c.handle) : null,
      state: 'pending',
      created_at: c.createdAt,
      expires_at: c.expiresAt,
      revoked_at: null,
      note: null,
    });
  },

  /** A pending intent whose backend cleanup failed: revoke_failed, retried by the sweeper. */
  async markRevokeFailed(q: Q, id: string, at: number, note: string): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'pending' }).update({ state: 'revoke_failed', revoked_at: at, note: clip(note) })) > 0;
  },

  async get(q: Q, id: string): Promise<CredentialRow | undefined> {
    const r = await q('credentials').where({ id }).first();
    return r ? fromRow(r) : undefined;
  },

  /** The intent learns what to revoke before the backend creates anything an agent could hold. */
  async checkpoint(q: Q, id: string, handle: Record<string, unknown>): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'pending' }).update({ handle: JSON.stringify(handle) })) > 0;
  },

  async markIssued(q: Q, id: string, v: { handle: Record<string, unknown>; expiresAt: number }): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'pending' }).update({ state: 'issued', handle: JSON.stringify(v.handle), expires_at: v.expiresAt })) > 0;
  },

  async markFailed(q: Q, id: string, note: string): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'pending' }).update({ state: 'failed', note: clip(note) })) > 0;
  },

  /** Claims an issued, not yet revoked row for revocation (issued → revoke_failed until the backend confirms). */
  async claimIssued(q: Q, id: string, at: number, note: string): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'issued' }).whereNull('revoked_at').update({ state: 'revoke_failed', revoked_at: at, note: clip(note) })) > 0;
  },

  /** Claims an orphaned intent (pending older than the grace period). */
  async claimPending(q: Q, id: string, at: number, createdBefore: number, note: string): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'pending' }).andWhere('created_at', '<', createdBefore).update({ state: 'revoke_failed', revoked_at: at, note: clip(note) })) > 0;
  },

  /** Claims a failed revocation for another attempt (at most one attempt per `attemptedBefore` window). */
  async claimRetry(q: Q, id: string, at: number, attemptedBefore: number): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'revoke_failed' }).andWhere('revoked_at', '<', attemptedBefore).update({ revoked_at: at })) > 0;
  },

  /** Final state after a revocation attempt on a claimed row. */
  async finish(q: Q, id: string, v: { state: CredentialState; at: number | null; note: string }): Promise<void> {
    await q('credentials').where({ id }).update({ state: v.state, revoked_at: v.at, note: clip(v.note) });
  },

  /** Issued, not yet revoked credentials of these sessions. */
  async revocableBySids(q: Q, sids: string[]): Promise<CredentialRow[]> {
    const out: CredentialRow[] = [];
    for (let i = 0; i < sids.length; i += CHUNK) {
      out.push(...(await q('credentials').whereIn('sid', sids.slice(i, i + CHUNK)).andWhere({ state: 'issued' }).whereNull('revoked_at')).map(fromRow));
    }
    return out;
  },

  /** Issued, not yet revoked credentials issued to these tokens. */
  async revocableByJtis(q: Q, jtis: string[]): Promise<CredentialRow[]> {
    const out: CredentialRow[] = [];
    for (let i = 0; i < jtis.length; i += CHUNK) {
      out.push(...(await q('credentials').whereIn('jti', jtis.slice(i, i + CHUNK)).andWhere({ state: 'issued' }).whereNull('revoked_at')).map(fromRow));
    }
    return out;
  },

  /**
   * Issued, not yet revoked, unexpired credentials whose token has been revoked: what the
   * after-commit revocation hook should have taken and did not (it failed, or the broker stopped
   * between the commit and the hook).
   */
  async ofRevokedTokens(q: Q, now: number, limit = 200): Promise<CredentialRow[]> {
    const rows = await q('credentials as c')
      .join('tokens as t', 't.jti', 'c.jti')
      .where('c.state', 'issued')
      .whereNull('c.revoked_at')
      .andWhere('c.expires_at', '>', now)
      .whereNotNull('t.revoked_at')
      .select('c.*')
      .orderBy('c.created_at')
      .limit(limit);
    return rows.map(fromRow);
  },

  async orphans(q: Q, createdBefore: number, limit = 200): Promise<CredentialRow[]> {
    return (await q('credentials').where({ state: 'pending' }).andWhere('created_at', '<', createdBefore).orderBy('created_at').limit(limit)).map(fromRow);
  },

  /** Failed revocations worth retrying: last attempt before `attemptedBefore`, and the credential not yet dead by itself. */
  async retryable(q: Q, attemptedBefore: number, now: number, limit = 200): Promise<CredentialRow[]> {
    return (await q('credentials').where({ state: 'revoke_failed' }).andWhere('revoked_at', '<', attemptedBefore).andWhere('expires_at', '>', now).orderBy('revoked_at').limit(limit)).map(fromRow);
  },

  async bySession(q: Q, sid: string): Promise<CredentialRow[]> {
    return (await q('credentials').where({ sid }).orderBy('created_at')).map(fromRow);
  },

  /** Credentials that may still work at `at`: issued (revocable or not) or with a revocation not yet confirmed. */
  async alive(q: Q, at: number, opts: { sid?: string; limit?: number } = {}): Promise<CredentialRow[]> {
    let b = q('credentials').whereIn('state', ['issued', 'revoke_failed']).andWhere('expires_at', '>', at).orderBy('created_at', 'desc').limit(opts.limit ?? 1000);
    if (opts.sid) b = b.where({ sid: opts.sid });
    return (await b).map(fromRow);
  },
};

/**
 * What one IAM deny entry denies (migration 002); null for a legacy per-revocation inline policy.
 * `expiry` is legacy too: an earlier build denied short-token STS credentials at their token's exp
 * (their session policy does that now); such rows are left out of every rebuilt policy and dropped once due.
 */
/**
 * One IAM deny entry (table `iam_denies`): one revoked session (`session`: its aws:SourceIdentity,
 * issued before `revokedAt` plus clock skew) or one credential revoked inside a live session
 * (`credential`: its aws:userid pattern). Every role carries one policy rebuilt from its entries.
 */
export interface DenyRecord {
  id: string;
  roleArn: string;
  policyName: string;
  sid: string;
  kind: 'session' | 'credential';
  subject: string;
  revokedAt: number; // ms
  removeAfter: number; // ms
}

export type IamDenyKind = 'session' | 'credential' | 'expiry';

export interface IamDenyRow {
  id: string;
  roleArn: string;
  /** The inline policy holding it: `cordon-revocations` (legacy rows: their own `cordon-revoke-<id>`). */
  policyName: string;
  sid: string;
  kind: IamDenyKind | null;
  /** `session`: the aws:SourceIdentity; `credential` (and legacy `expiry`): the aws:userid pattern. */
  subject: string | null;
  /** When the revocation was decided (bounds aws:TokenIssueTime for `session` entries). */
  revokedAt: number | null;
  createdAt: number;
  removeAfter: number;
  removedAt: number | null;
}

const denyFromRow = (r: Record<string, unknown>): IamDenyRow => ({
  id: r.id as string,
  roleArn: r.role_arn as string,
  policyName: r.policy_name as string,
  sid: r.sid as string,
  kind: (r.kind as IamDenyKind | null | undefined) ?? null,
  subject: (r.subject as string | null | undefined) ?? null,
  revokedAt: numOrNull(r.revoked_at),
  createdAt: num(r.created_at),
  removeAfter: num(r.remove_after),
  removedAt: numOrNull(r.removed_at),
});

/**
 * Active entries as the provider sees them, to build a role's revocation policy from (rows of a
 * legacy per-revocation policy have no kind and are never handed over; legacy `expiry` rows are left out).
 */
export const denyEntriesOf = (rows: readonly IamDenyRow[]): DenyRecord[] =>
  rows.flatMap((r) =>
    r.kind === 'expiry'
      ? []
      : [{ id: r.id, roleArn: r.roleArn, policyName: r.policyName, sid: r.sid, kind: r.kind ?? 'session', subject: r.subject ?? '', revokedAt: r.revokedAt ?? r.createdAt, removeAfter: r.removeAfter }],
  );

/** In-process queue per database and role: one rebuild-and-put at a time in this process (PostgreSQL adds a lock across replicas). */
const roleQueues = new WeakMap<object, Map<string, Promise<unknown>>>();

/**
 * IAM deny entries. Every role with entries carries ONE inline policy (`cordon-revocations`)
 * rebuilt in full from the role's active rows (kind not null, removed_at null): the rows are the
 * truth, IAM a projection of them, so a stale write is corrected by the next rebuild.
 */
export const iamDenies = {
  /** Written before PutRolePolicy, so a deny can always be found and removed later. */
  async insert(q: Q, d: Omit<IamDenyRow, 'removedAt' | 'kind' | 'subject' | 'revokedAt'> & Partial<Pick<IamDenyRow, 'kind' | 'subject' | 'revokedAt'>>): Promise<void> {
    await q('iam_denies').insert({
      id: d.id,
      role_arn: d.roleArn,
      policy_name: d.policyName,
      sid: d.sid,
      kind: d.kind ?? null,
      subject: d.subject ?? null,
      revoked_at: d.revokedAt ?? null,
      created_at: d.createdAt,
      remove_after: d.removeAfter,
      removed_at: null,
    });
  },
  /** Legacy per-revocation policies (kind null) whose credentials have all expired. */
  async dueLegacy(q: Q, now: number, limit = 100): Promise<IamDenyRow[]> {
    return (await q('iam_denies').whereNull('removed_at').whereNull('kind').andWhere('remove_after', '<=', now).orderBy('remove_after').limit(limit)).map(denyFromRow);
  },
  async byIds(q: Q, ids: string[]): Promise<IamDenyRow[]> {
    return (await q('iam_denies').whereIn('id', ids.slice(0, CHUNK))).map(denyFromRow);
  },
  async markRemoved(q: Q, id: string, at: number): Promise<boolean> {
    return (await q('iam_denies').where({ id }).whereNull('removed_at').update({ removed_at: at })) > 0;
  },
  /** Marks these entries removed; returns the ones this call removed (not someone else before it). */
  async markRemovedMany(q: Q, ids: string[], at: number): Promise<number> {
    let n = 0;
    for (let i = 0; i < ids.length; i += CHUNK) n += await q('iam_denies').whereIn('id', ids.slice(i, i + CHUNK)).whereNull('removed_at').update({ removed_at: at });
    return n;
  },
  async bySession(q: Q, sid: string): Promise<IamDenyRow[]> {
    return (await q('iam_denies').where({ sid }).orderBy('created_at').orderBy('id')).map(denyFromRow);
  },
  async active(q: Q): Promise<IamDenyRow[]> {
    return (await q('iam_denies').whereNull('removed_at').orderBy('created_at').orderBy('id')).map(denyFromRow);
  },
  /** The role's active entries, oldest first (the order in which they claim room in the policy). */
  async activeForRole(q: Q, roleArn: string): Promise<IamDenyRow[]> {
    return (await q('iam_denies').where({ role_arn: roleArn }).whereNotNull('kind').whereNull('removed_at').orderBy('created_at').orderBy('id')).map(denyFromRow);
  },
  /** Roles that have active entries (the sweeper reconciles each of them on every sweep). */
  async rolesWithEntries(q: Q, limit = 1000): Promise<string[]> {
    return (await q('iam_denies').distinct('role_arn').whereNotNull('kind').whereNull('removed_at').orderBy('role_arn').limit(limit)).map((r: { role_arn: string }) => r.role_arn);
  },

  /**
   * Runs `fn` with the role's active entries as committed, serialised per role: in this process by
   * a queue, and on PostgreSQL across replicas by `pg_advisory_xact_lock(hashtext(role_arn))`
   * inside a short transaction that reads the entries, runs `fn` (which rebuilds and PUTs the
   * role's policy) and commits whatever `fn` wrote through `q`. Holding the lock across the IAM
   * call is deliberate: it only ever waits on other rebuilds of the same role (bounded by the IAM
   * timeout), and it guarantees the last PUT was built from the newest committed entries. On
   * SQLite (one writer connection, one replica) no transaction is held across the call: the queue
   * serialises this process, and the sweeper's periodic reconcile repairs anything else.
   */
  async withRole<T>(db: Q, roleArn: string, fn: (q: Q, entries: IamDenyRow[]) => Promise<T>): Promise<T> {
    const key = db.client as object;
    let queues = roleQueues.get(key);
    if (!queues) roleQueues.set(key, (queues = new Map()));
    const prev = queues.get(roleArn) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() =>
      isPostgres(db)
        ? db.transaction(async (tx) => {
            await tx.raw('select pg_advisory_xact_lock(hashtext(?))', [roleArn]);
            return fn(tx, await iamDenies.activeForRole(tx, roleArn));
          })
        : (async () => fn(db, await iamDenies.activeForRole(db, roleArn)))(),
    );
    queues.set(roleArn, run);
    try {
      return await run;
    } finally {
      if (queues.get(roleArn) === run) queues.delete(roleArn);
    }
  },
};
