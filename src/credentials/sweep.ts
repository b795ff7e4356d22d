/**
 * The sweeper: what the broker does for credentials nobody asks about.
 *
 * 1. Orphans: intent rows still 'pending' after the grace period (the broker died, or lost the
 *    backend's answer, between asking and recording). Whatever their checkpointed handle names is
 *    revoked (a Vault parent token takes its child token and leases with it; an STS credential
 *    whose names were known before the call is denied by IAM when the policy allows).
 * 2. Ended sessions (expired or revoked) not yet swept: their remaining issued credentials are
 *    revoked (for a session that simply expired, STS credentials are not denied: they ended with
 *    their tokens, by expiry or by their session policy's time bound), then the session is marked swept.
 * 3. Credentials of revoked tokens in sessions that still live, which the after-commit revocation
 *    hook did not take (it failed, or the broker stopped right after the commit), are revoked.
 *    Failed revocations are retried until they succeed or the credential has expired anyway.
 * 4. Each provider's reconcile hook (STS: IAM deny entries are dropped once everything they denied
 *    has expired, and the one revocation policy of every role with entries is rebuilt from the
 *    database, deleted when none is left).
 * 5. Spent one-time values (DPoP proof jtis) are pruned, and the refusal limiter forgets windows that ended.
 * 6. Retention: rows that ended more than CORDON_RETENTION ago are deleted (retention.ts; never the audit log).
 *
 * Safe on several replicas: every credential row is claimed with a conditional UPDATE before
 * any backend call, IAM policy rebuilds are idempotent (and serialised per role on PostgreSQL), and marking a session swept is conditional.
 * Idempotent: running it twice does nothing the second time.
 */
import type { Broker } from '../broker.ts';
import { periodic } from '../periodic.ts';
import { credentials } from '../store/credentials.ts';
import { replayGuard } from '../store/replay.ts';
import { sessions } from '../store/sessions.ts';
import { createProviders } from '../providers/index.ts';
import { attachProviders, reconcileCtx, revokeRows } from './revoke.ts';
import { pruneRetained, type RetentionReport } from './retention.ts';

export interface SweepReport {
  orphans: number;
  sessionsSwept: number;
  revoked: number;
  notRevocable: number;
  failed: number;
  retried: number;
  deniesRemoved: number;
  replayPruned: number;
  pruned: RetentionReport;
}

/**
 * How long an intent may stay 'pending' before it counts as orphaned: longer than any issue can
 * take (a Vault issue makes up to four calls, each bounded by the timeout), and at least a minute.
 */
export function orphanGraceMs(b: Broker): number {
  const longest = Math.max(b.config.vault?.timeoutMs ?? 0, b.config.sts?.timeoutMs ?? 0);
  return Math.max(60_000, 4 * longest + 10_000);
}

const BATCH = 100;

const emptyPruned = (): RetentionReport => ({ sessions: 0, tokens: 0, credentials: 0, revocations: 0, iamDenies: 0, bootstrapTokens: 0 });

export async function sweepOnce(b: Broker): Promise<SweepReport> {
  const rep: SweepReport = {
    orphans: 0,
    sessionsSwept: 0,
    revoked: 0,
    notRevocable: 0,
    failed: 0,
    retried: 0,
    deniesRemoved: 0,
    replayPruned: 0,
    pruned: emptyPruned(),
  };
  const add = (s: { revoked: number; notRevocable: number; failed: number }): void => {
    rep.revoked += s.revoked;
    rep.notRevocable += s.notRevocable;
    rep.failed += s.failed;
  };
  const now = b.clock.now();

  // 1. Orphaned intents.
  const before = now - orphanGraceMs(b);
  const orphans = await credentials.orphans(b.db, before, BATCH);
  if (orphans.length) {
    const s = await revokeRows(b, orphans, { scope: 'orphan', claim: 'pending', why: 'the broker never recorded the backend answer', pendingBefore: before });
    rep.orphans += orphans.length - s.skipped;
    add(s);
  }

  // 2. Ended sessions.
  for (const s of await sessions.endedUnswept(b.db, now, BATCH)) {
    const rows = await credentials.revocableBySids(b.db, [s.sid]);
    // A session that simply ended is not a revocation: its credentials end with it (Vault ones are
    // still revoked, tidily); STS ones get no IAM deny (they ended with their tokens).
    if (rows.length)
      add(
        await revokeRows(
          b,
          rows,
          s.revokedAt !== null ? { scope: 'session', claim: 'issued', why: 'session revoked' } : { scope: 'expired', claim: 'issued', why: 'session ended' },
        ),
      );
    // In-flight issues of this session (pending rows) finish by themselves: their commit sees the session
    // ended and revokes, or orphan recovery does. Swept = nothing issued is left to revoke.
    if (await sessions.markSwept(b.db, s.sid, now)) rep.sessionsSwept++;
  }

  // 3. Revoked tokens the revocation hook missed, then retries (at most one attempt per sweep interval per row).
  const missed = await credentials.ofRevokedTokens(b.db, now, BATCH);
  if (missed.length) add(await revokeRows(b, missed, { scope: 'token', claim: 'issued', why: 'token revoked (after-commit cleanup missed it)' }));
  const retryBefore = now - b.config.sweepIntervalSec * 1000 + 1;
  const retry = await credentials.retryable(b.db, retryBefore, now, BATCH);
  if (retry.length) {
    const s = await revokeRows(b, retry, { scope: 'token', claim: 'retry', why: 'retrying a failed revocation', retryBefore });
    rep.retried += retry.length - s.skipped;
    add(s);
  }

  // 4. What providers keep at their backends beyond single credentials (STS: IAM revocation policies).
  for (const p of b.providers.values()) {
    if (!p.reconcile) continue;
    try {
      rep.deniesRemoved += await p.reconcile(reconcileCtx(b));
    } catch (e) {
      b.log.warn({ err: (e as Error).message, provider: p.name }, 'provider reconcile failed; will retry');
    }
  }

  // 5. Spent one-time values; refusal counters of ended windows (their summaries written).
  rep.replayPruned = await replayGuard.prune(b.db, now);
  b.refusals.flushEnded();

  // 6. Rows past the retention window.
  rep.pruned = await pruneRetained(b, now);
  return rep;
}

export interface Sweeper {
  /** Runs one sweep now (waits for a running one first). */
  runNow(): Promise<SweepReport | undefined>;
  stop(): Promise<void>;
}

/**
 * Runs `sweepOnce` right away (start-up recovery of orphans) and then every `intervalSec`, never
 * two at once. Errors are logged; the next run tries again.
 */
export function startSweeper(b: Broker, intervalSec = b.config.sweepIntervalSec): Sweeper {
  return periodic(
    async () => {
      const rep = await sweepOnce(b);
      if (rep.orphans || rep.sessionsSwept || rep.revoked || rep.failed || rep.deniesRemoved || rep.pruned.sessions) b.log.info({ sweep: rep }, 'sweeper');
      return rep;
    },
    {
      intervalMs: intervalSec * 1000,
      runAtStart: true,
      onError: (e) => b.log.error({ err: (e as Error).message }, 'sweep failed; retrying at the next interval'),
    },
  );
}

/**
 * The whole backend-credential subsystem for a running broker: the providers the configuration
 * turns on (logged in early, not fatally), revocations reaching them, and the sweeper (whose first
 * run recovers orphans left by a previous crash). `stop` undoes all of it.
 */
export async function startBackendCredentials(b: Broker, opts: { sweep?: boolean } = {}): Promise<{ stop(): Promise<void> }> {
  const providers = createProviders(b.config, { clock: b.clock, log: b.log, clockSkewSec: b.config.clockSkewSec });
  const detach = attachProviders(b, providers);
  try {
    for (const p of providers.values()) await p.start?.();
  } catch (e) {
    // A provider refused its configuration (say a root Vault token): leave nothing attached.
    detach();
    for (const p of providers.values()) await p.close?.().catch(() => {});
    throw e;
  }
  if (providers.size) b.log.info({ providers: [...providers.keys()] }, 'backend credential providers on');
  const sweeper = opts.sweep === false ? undefined : startSweeper(b);
  return {
    async stop() {
      await sweeper?.stop();
      detach();
      for (const p of providers.values()) await p.close?.().catch(() => {});
    },
  };
}
