/**
 * Retention: what has ended more than CORDON_RETENTION ago is deleted by the sweeper, so the
 * database stays the size of its recent traffic. Kept for the window: sessions with their tokens
 * and credentials (what `cordon session show` and an investigation want), revocation feed entries,
 * IAM deny entries, bootstrap tokens. Never deleted: the audit log, which keeps the whole history.
 */
import type { Broker } from '../broker.ts';
import { FEED_GRACE_MS } from '../revocation/feed.ts';
import { transact } from '../store/db.ts';
import { retention } from '../store/retention.ts';

export interface RetentionReport {
  sessions: number;
  tokens: number;
  credentials: number;
  revocations: number;
  iamDenies: number;
  bootstrapTokens: number;
}

/** Rows per statement and statements per sweep: each batch is its own short transaction, so writers on SQLite wait for one batch at most. */
const BATCH = 200;
const MAX_BATCHES = 20;

/** Deletes, in batches, every row that ended more than the retention window before now. */
export async function pruneRetained(b: Broker, now = b.clock.now()): Promise<RetentionReport> {
  const cutoff = now - b.config.retentionMs;
  const rep: RetentionReport = { sessions: 0, tokens: 0, credentials: 0, revocations: 0, iamDenies: 0, bootstrapTokens: 0 };
  for (let i = 0; i < MAX_BATCHES; i++) {
    // Chosen and deleted in one transaction; what makes a session prunable (ended, swept, every credential final) never reverts.
    const n = await transact(b.db, async (tx) => retention.deleteSessions(tx, await retention.prunableSessions(tx, cutoff, BATCH)));
    rep.sessions += n.sessions;
    rep.tokens += n.tokens;
    rep.credentials += n.credentials;
    if (n.sessions < BATCH) break;
  }
  const drain = async (step: () => Promise<number>): Promise<number> => {
    let total = 0;
    for (let i = 0; i < MAX_BATCHES; i++) {
      const n = await step();
      total += n;
      if (n < BATCH) break;
    }
    return total;
  };
  rep.credentials += await drain(() => retention.pruneCredentials(b.db, cutoff, BATCH));
  // A feed entry outlives its subject by FEED_GRACE_MS (verifiers' clock tolerance); the window counts from then.
  rep.revocations = await drain(() => retention.pruneRevocations(b.db, now - FEED_GRACE_MS - b.config.retentionMs, BATCH));
  rep.iamDenies = await drain(() => retention.pruneIamDenies(b.db, cutoff, BATCH));
  rep.bootstrapTokens = await drain(() => retention.pruneBootstrapTokens(b.db, cutoff, BATCH));
  return rep;
}
