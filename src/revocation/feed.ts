import type { Broker } from '../broker.ts';
import { revocations } from '../store/revocations.ts';

export interface FeedPage {
  cursor: number;
  more: boolean;
  revoked: Array<{ kind: 'jti' | 'sid' | 'agent'; value: string; exp: number; revoked_at: number }>;
}

/**
 * Verifiers accept a token a little past its `exp` (clock tolerance, jose's default is 10 s), so
 * an entry stays in the feed this long after the revoked thing expired.
 */
export const FEED_GRACE_MS = 120_000;

/**
 * Revocations after `since`. Entries whose subject expired more than FEED_GRACE_MS ago are
 * skipped (every verifier refuses them on `exp` by then), but the cursor still moves past them.
 */
export async function revocationFeed(b: Broker, since: number, limit: number): Promise<FeedPage> {
  const rows = await revocations.since(b.read, since, limit);
  const now = b.clock.now() - FEED_GRACE_MS;
  const cursor = rows.length ? rows[rows.length - 1].seq : Math.max(since, 0);
  return {
    cursor,
    more: rows.length === limit,
    revoked: rows
      // An agent's changed row (disable, enable, rotation) is for the broker's caches only: it revokes nothing.
      .filter((r): r is typeof r & { kind: FeedPage['revoked'][number]['kind'] } => r.kind !== 'agentrow' && r.expiresAt > now)
      .map((r) => ({ kind: r.kind, value: r.value, exp: Math.ceil(r.expiresAt / 1000), revoked_at: Math.floor(r.revokedAt / 1000) })),
  };
}
