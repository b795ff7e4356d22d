import { type Q, isPostgres, num, numOrNull } from './db.ts';

/** SQLite caps bound variables per statement; chunk long IN lists. */
const CHUNK = 400;

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
      : [
          {
            id: r.id,
            roleArn: r.roleArn,
            policyName: r.policyName,
            sid: r.sid,
            kind: r.kind ?? 'session',
            subject: r.subject ?? '',
            revokedAt: r.revokedAt ?? r.createdAt,
            removeAfter: r.removeAfter,
          },
        ],
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
  async insert(
    q: Q,
    d: Omit<IamDenyRow, 'removedAt' | 'kind' | 'subject' | 'revokedAt'> & Partial<Pick<IamDenyRow, 'kind' | 'subject' | 'revokedAt'>>,
  ): Promise<void> {
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
    return (await q('iam_denies').whereNull('removed_at').whereNull('kind').andWhere('remove_after', '<=', now).orderBy('remove_after').limit(limit)).map(
      denyFromRow,
    );
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
    for (let i = 0; i < ids.length; i += CHUNK)
      n += await q('iam_denies')
        .whereIn('id', ids.slice(i, i + CHUNK))
        .whereNull('removed_at')
        .update({ removed_at: at });
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
    return (await q('iam_denies').where({ role_arn: roleArn }).whereNotNull('kind').whereNull('removed_at').orderBy('created_at').orderBy('id')).map(
      denyFromRow,
    );
  },
  /** Roles that have active entries (the sweeper reconciles each of them on every sweep). */
  async rolesWithEntries(q: Q, limit = 1000): Promise<string[]> {
    return (await q('iam_denies').distinct('role_arn').whereNotNull('kind').whereNull('removed_at').orderBy('role_arn').limit(limit)).map(
      (r: { role_arn: string }) => r.role_arn,
    );
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
    const run = prev
      .catch(() => undefined)
      .then(() =>
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
