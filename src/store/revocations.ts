import { type Q, isPostgres, num } from './db.ts';
import { REVOCATION_CHANNEL } from './revocation-listener.ts';

/**
 * What a feed row names: a token, a session, a revoked agent, or (`agentrow`, never published to
 * offline verifiers) an agent whose row changed in a way that can be undone (disable, enable,
 * new credentials): the broker's own caches drop what they hold of it.
 */
export type RevocationKind = 'jti' | 'sid' | 'agent' | 'agentrow';
export interface Revocation {
  seq: number;
  kind: RevocationKind;
  value: string;
  expiresAt: number;
  revokedAt: number;
}

export const revocations = {
  /**
   * Must run inside the revoking transaction. On PostgreSQL sequence values are not handed out
   * in commit order, so a reader could see seq N+1 committed, move its cursor past it and never
   * see N; a transaction-scoped lock taken before the insert makes seq order commit order.
   */
  async add(q: Q, entries: Array<Omit<Revocation, 'seq'>>): Promise<void> {
    if (!entries.length) return;
    // The notification is delivered at commit to every replica listening (revocation-listener.ts),
    // and never if this rolls back: queued here with the lock, in the same round trip.
    if (isPostgres(q)) await q.raw("SELECT pg_advisory_xact_lock(7202), pg_notify(?, '')", [REVOCATION_CHANNEL]);
    const rows = entries.map((e) => ({ kind: e.kind, value: e.value, expires_at: e.expiresAt, revoked_at: e.revokedAt }));
    for (let i = 0; i < rows.length; i += 200) await q('revocations').insert(rows.slice(i, i + 200));
  },
  /** Entries after the cursor, in order; callers drop the ones already expired but advance past them. */
  async since(q: Q, cursor: number, limit = 1000): Promise<Revocation[]> {
    const rows = await q('revocations').where('seq', '>', cursor).orderBy('seq').limit(limit);
    return rows.map((r) => ({ seq: num(r.seq), kind: r.kind, value: r.value, expiresAt: num(r.expires_at), revokedAt: num(r.revoked_at) }));
  },
  async lastSeq(q: Q): Promise<number> {
    const r = await q('revocations').max({ m: 'seq' }).first();
    return num(r?.m);
  },
};
