import type { Q } from './db.ts';

const isUniqueViolation = (e: unknown): boolean => {
  const err = e as { code?: string; message?: string };
  return err.code === '23505' || err.code === 'SQLITE_CONSTRAINT' || /UNIQUE constraint failed/.test(err.message ?? '');
};

/** One-time values (DPoP proof jtis, client assertion jtis): the first use wins, later ones are replays. */
export const replayGuard = {
  /** True when the key was new and is now recorded; false when it was seen and has not expired. Not for use inside a transaction. */
  async claim(q: Q, key: string, expiresAt: number, now: number): Promise<boolean> {
    await q('replay_guard').where({ key }).andWhere('expires_at', '<=', now).del();
    try {
      await q('replay_guard').insert({ key, expires_at: expiresAt });
      return true;
    } catch (e) {
      if (isUniqueViolation(e)) return false;
      throw e;
    }
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
