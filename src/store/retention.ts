import type { Knex } from 'knex';
import type { Q } from './db.ts';

/**
 * Deleting what has ended long enough ago (the retention window) that nobody needs it any more, so
 * the database does not grow with every session ever started. The audit log is never touched: it is
 * append-only and names sessions, tokens and credentials by id as text, with no foreign key.
 *
 * A session goes whole (its credentials, its tokens, then itself, in one transaction), so a
 * delegation tree is never left with a parent missing; a session that is still there still shows
 * its complete tree in `cordon session show`.
 */

/** SQLite caps bound variables per statement; chunk long IN lists. */
const CHUNK = 400;

/**
 * A credential nothing will act on again, ended before `cutoff`: expired then, or revoked or failed
 * then (the sweeper retries a failed revocation only while the credential is unexpired). A pending
 * intent never is: orphan recovery owns it.
 */
function finalBefore(cutoff: number, prefix = ''): (w: Knex.QueryBuilder) => void {
  return (w) =>
    void w
      .whereNot(`${prefix}state`, 'pending')
      .andWhere((x): void => void x.where(`${prefix}expires_at`, '<=', cutoff).orWhere((y): void => revokedBefore(y, cutoff, prefix)));
}

/** Revoked or failed, decided before `cutoff` (a failed issue has no revocation time: its intent's). */
const revokedBefore = (w: Knex.QueryBuilder, cutoff: number, prefix: string): void =>
  void w.whereIn(`${prefix}state`, ['revoked', 'failed']).andWhereRaw(`coalesce(${prefix}revoked_at, ${prefix}created_at) <= ?`, [cutoff]);

export const retention = {
  /**
   * Sessions that ended (expired, or revoked) before `cutoff`, that the sweeper has finished with
   * (swept), and whose every backend credential is final before `cutoff`. Oldest first.
   */
  async prunableSessions(q: Q, cutoff: number, limit: number): Promise<string[]> {
    const rows = await q('sessions as s')
      .select('s.sid')
      .whereNotNull('s.swept_at')
      .andWhere((w): void => void w.where('s.expires_at', '<=', cutoff).orWhere('s.revoked_at', '<=', cutoff))
      .whereNotExists(function (this: Knex.QueryBuilder) {
        void this.select(1).from('credentials as c').whereRaw('c.sid = s.sid').andWhereNot(finalBefore(cutoff, 'c.'));
      })
      .orderBy('s.expires_at')
      .limit(limit);
    return rows.map((r: { sid: string }) => r.sid);
  },

  /** Deletes these sessions with their tokens and credentials (children first: the foreign keys point at sessions). Run in one transaction. */
  async deleteSessions(tx: Q, sids: string[]): Promise<{ sessions: number; tokens: number; credentials: number }> {
    const n = { sessions: 0, tokens: 0, credentials: 0 };
    for (let i = 0; i < sids.length; i += CHUNK) {
      const part = sids.slice(i, i + CHUNK);
      n.credentials += await tx('credentials').whereIn('sid', part).del();
      n.tokens += await tx('tokens').whereIn('sid', part).del();
      n.sessions += await tx('sessions').whereIn('sid', part).del();
    }
    return n;
  },

  /**
   * Credential rows revoked or failed, and ended (revoked, failed or expired) before `cutoff`,
   * whatever their session: a session living longer than the window keeps its tree, not every
   * spent credential. Issued rows that merely expired go with their session, once swept.
   */
  async pruneCredentials(q: Q, cutoff: number, limit: number): Promise<number> {
    const ids = q('credentials').select('id').whereIn('state', ['revoked', 'failed']).andWhere(finalBefore(cutoff)).limit(limit);
    return q('credentials').whereIn('id', ids).del();
  },

  /**
   * Revocation feed entries whose subject expired before `expiredBefore`. The newest entry always
   * stays, so the feed's sequence keeps rising for every reader's cursor whatever the database.
   */
  async pruneRevocations(q: Q, expiredBefore: number, limit: number): Promise<number> {
    const seqs = q('revocations')
      .select('seq')
      .where('expires_at', '<=', expiredBefore)
      .andWhere('seq', '<', q('revocations').max('seq'))
      .orderBy('seq')
      .limit(limit);
    return q('revocations').whereIn('seq', seqs).del();
  },

  /** IAM deny entries taken off their role before `cutoff` (the role's policy no longer carries them). */
  async pruneIamDenies(q: Q, cutoff: number, limit: number): Promise<number> {
    const ids = q('iam_denies').select('id').whereNotNull('removed_at').andWhere('removed_at', '<=', cutoff).limit(limit);
    return q('iam_denies').whereIn('id', ids).del();
  },

  /** Bootstrap tokens that expired before `cutoff` (used or not: none can be redeemed any more). */
  async pruneBootstrapTokens(q: Q, cutoff: number, limit: number): Promise<number> {
    const ids = q('bootstrap_tokens').select('id').where('expires_at', '<=', cutoff).limit(limit);
    return q('bootstrap_tokens').whereIn('id', ids).del();
  },
};
