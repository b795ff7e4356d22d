import type { Q } from './db.ts';

/** One-time values (DPoP proof jtis, client assertion jtis, single-use federated JWTs): the first use wins, later ones are replays. */
export const replayGuard = {
  /**
   * True when the key was new and is now recorded; false when it was seen and has not expired.
   * A conflict is ignored rather than raised, so this is safe inside a transaction too (a
   * PostgreSQL unique violation would abort the whole transaction).
   */
  async claim(q: Q, key: string, expiresAt: number, now: number): Promise<boolean> {
    // A value already past its life cannot be claimed: its key would count as expired at once, and
    // the next use would delete it and claim the value again.
    if (expiresAt <= now) return false;
    await q('replay_guard').where({ key }).andWhere('expires_at', '<=', now).del();
    const inserted = await q('replay_guard').insert({ key, expires_at: expiresAt }).onConflict('key').ignore().returning('key');
    return inserted.length === 1;
  },
  /** Moves the expiry of a claimed key (never shortens it below what was claimed). */
  async extend(q: Q, key: string, expiresAt: number): Promise<void> {
    await q('replay_guard').where({ key }).andWhere('expires_at', '<', expiresAt).update({ expires_at: expiresAt });
  },
  async seen(q: Q, key: string, now: number): Promise<boolean> {
    return (await q('replay_guard').where({ key }).andWhere('expires_at', '>', now).first()) !== undefined;
  },
  async prune(q: Q, now: number): Promise<number> {
    return q('replay_guard').where('expires_at', '<=', now).del();
  },
};
