/**
 * One audit row per call through the gateway, allowed or refused, written through the broker's
 * group commit: a call never waits for its own transaction, and many calls share one fsync. A
 * refusal before anyone is known (no token, a forged one) is junk anyone can send: it goes to the
 * broker's refusal writer, which summarises floods per address. If rows cannot be written the
 * gateway stops forwarding (`healthy`), so nothing passes unrecorded for long.
 */
import type { Broker } from '../broker.ts';
import type { Attempt } from '../audit/attempt.ts';
import { recordRefusal } from '../audit/refusals.ts';
import type { CordonError } from '../errors.ts';
import type { AuditEvent } from '../store/audit-events.ts';

/** Calls waiting for their rows beyond this refuse new calls (503): the audit log is falling behind. */
const MAX_PENDING = 20_000;

export class CallAudit {
  readonly #b: Broker;
  #failing = false;
  readonly #inflight = new Set<Promise<void>>();

  constructor(b: Broker) {
    this.#b = b;
  }

  /** False while rows are failing to commit or piling up: the gateway then refuses to forward. */
  get healthy(): boolean {
    return !this.#failing && this.#b.issuance.pending < MAX_PENDING;
  }

  /** Records a call that got as far as a known agent (allowed, refused or failed upstream). */
  call(
    event: Extract<AuditEvent, 'gateway.call' | 'egress.connect' | 'mcp.call'>,
    attempt: Attempt,
    decision: 'allow' | 'deny',
    facts: Record<string, unknown>,
    refusal?: CordonError,
  ): void {
    if (attempt.agentId === null && refusal) {
      this.#refusal(attempt, refusal);
      return;
    }
    for (const f of this.#b.hooks.onDecision) f(event, decision, refusal?.reason ?? null);
    this.#b.issuance
      .appendAudit({
        at: this.#b.clock.now(),
        event,
        decision,
        agentId: attempt.agentId,
        sid: attempt.sid,
        jti: attempt.jti,
        chain: attempt.chain,
        ...(refusal ? { reason: `${refusal.code}: ${refusal.description}` } : {}),
        params: {
          ...attempt.params,
          ...facts,
          ...(refusal ? { reason_tag: refusal.reason, ...refusal.auditParams } : {}),
          ...(attempt.clientAddress !== undefined ? { client_address: attempt.clientAddress } : {}),
        },
      })
      .then(
        () => (this.#failing = false),
        (e: Error) => {
          this.#failing = true;
          this.#b.log.error({ err: e.message, event }, 'could not write a gateway audit row; the gateway refuses calls until rows commit again');
        },
      );
  }

  #refusal(attempt: Attempt, refusal: CordonError): void {
    const p = recordRefusal(this.#b, attempt, refusal)
      .catch((e: Error) => this.#b.log.error({ err: e.message }, 'could not audit a refusal'))
      .finally(() => this.#inflight.delete(p));
    this.#inflight.add(p);
  }

  /** Resolves once every row of the calls so far is written (or failed): before shutdown, and for tests. */
  async idle(): Promise<void> {
    while (this.#inflight.size) await Promise.all([...this.#inflight]);
    await this.#b.issuance.idle();
  }
}
