import type { Broker } from '../broker.ts';
import { revocations } from '../store/revocations.ts';

export interface FeedPage {
  cursor: number;
  more: boolean;
  revoked: Array<{ kind: 'jti' | 'sid' | 'agent'; value: string; exp: number; revoked_at: number }>;
}

/**
 * Revocations after `since`. Entries whose subject has expired anyway are skipped (a verifier
 * refuses them on `exp`), but the cursor still moves past them.
 */
export async function revocationFeed(b: Broker, since: number, limit: number): Promise<FeedPage> {
  const rows = await revocations.since(b.db, since, limit);
  const now = b.clock.now();
  const cursor = rows.length ? rows[rows.length - 1].seq : Math.max(since, 0);
  return {
    cursor,
    more: rows.length === limit,
    revoked: rows
      .filter((r) => r.expiresAt > now)
      .map((r) => ({ kind: r.kind, value: r.value, exp: Math.ceil(r.expiresAt / 1000), revoked_at: Math.floor(r.revokedAt / 1000) })),
  };
}
