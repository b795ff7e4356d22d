import type { Broker } from '../broker.ts';
import type { CordonError } from '../errors.ts';
import { isWellFormedId } from '../ids.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { transact } from '../store/db.ts';
import type { Attempt } from './attempt.ts';
import { RefusalLimiter, type RefusalSummary } from './refusal-limiter.ts';

/**
 * The one writer of refusals, called by each entry point (HTTP route, grant, CLI command) exactly
 * once for a refused attempt: who (as far as the decisions learned), what was asked, why — the RFC
 * error code and the description, with the stable reason tag in `params.reason_tag` (metrics and
 * summaries count by that tag). A refusal made to
 * a network caller carries its client address; when it names no known agent (nobody authenticated,
 * no claimed client id that is in the agents table) it is junk anyone can send, and goes through
 * the broker's refusal limiter: written as usual up to the per-address budget, counted into one
 * summary row per address and window beyond it. Refusals of known agents are always written.
 * Errors that are not the caller's (5xx other than a backend refusal) are not refusals.
 */
export async function recordRefusal(b: Broker, attempt: Attempt, e: CordonError): Promise<void> {
  const reason = `${e.code}: ${e.description}`;
  for (const f of b.hooks.onDecision) f(attempt.event, 'deny', e.reason);
  if (attempt.clientAddress !== undefined && !(await isKnownAgent(b, attempt.agentId)) && !b.refusals.admit(attempt.clientAddress, e.reason)) return;
  const params = {
    ...attempt.params,
    ...e.auditParams,
    attempted: attempt.event,
    reason_tag: e.reason,
    ...(attempt.clientAddress !== undefined ? { client_address: attempt.clientAddress } : {}),
  };
  await transact(b.db, (tx) =>
    appendAudit(tx, {
      at: b.clock.now(),
      event: 'deny',
      decision: 'deny',
      agentId: attempt.agentId,
      sid: attempt.sid,
      jti: attempt.jti,
      chain: attempt.chain,
      reason,
      params,
    }),
  );
}

/** A cheap primary-key read; when the database cannot answer, the refusal is written as a known agent's would be. */
async function isKnownAgent(b: Broker, id: string | null | undefined): Promise<boolean> {
  if (!isWellFormedId(id)) return false;
  try {
    return (await b.live.agents.get(b.read, id)) !== undefined;
  } catch {
    return true;
  }
}

/** The broker's refusal limiter, whose summaries are rows of the chain (broker.ts makes one per broker). */
export function createRefusalLimiter(b: Pick<Broker, 'db' | 'clock' | 'log'>): RefusalLimiter {
  return new RefusalLimiter({
    clock: b.clock,
    write: async (s) => {
      await transact(b.db, (tx) => appendAudit(tx, summaryEntry(b.clock.now(), s)));
    },
    onError: (e) => b.log.error({ err: (e as Error).message }, 'could not write a refusal summary'),
  });
}

const summaryEntry = (at: number, s: RefusalSummary) => ({
  at,
  event: 'deny.summary' as const,
  decision: 'deny' as const,
  reason: `${s.count} more refusals naming no known agent from ${s.address} in this window, counted instead of written one by one`,
  params: {
    client_address: s.address,
    count: s.count,
    window_start: new Date(s.windowStart).toISOString(),
    window_end: new Date(s.windowEnd).toISOString(),
    reasons: s.topReasons,
  },
});
