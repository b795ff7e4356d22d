/**
 * A policy's `limits` at the gateway, per session: `calls_per_minute` refuses calls past the rate
 * (429 with Retry-After), and `on_denials` turns a burst of refusals into an alarm (an `alarm`
 * audit row, a metric, a POST to CORDON_ALERT_WEBHOOK) and, with `then: revoke_session`, the
 * session's revocation. Every front door (reverse, egress, MCP) calls `admit` once a call is
 * authorised and `denied` after refusing a known caller, so one session has one budget whatever
 * door it knocks on. State lives in memory, per process, and is dropped once it can no longer
 * matter (no activity for longer than its windows), so idle and ended sessions cost nothing.
 */
import { Counter } from 'prom-client';
import { request } from 'undici';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import type { Limits, Policy } from '../policy/types.ts';
import { revokeSession } from '../revocation/revoke.ts';
import type { Revoked } from '../tokens/live-cache.ts';
import type { GatewayPrincipal } from './principal.ts';

const MINUTE_MS = 60_000;
const WEBHOOK_TIMEOUT_MS = 2000;
/** Idle sessions are looked for at most this often (broker clock), or sooner when the map doubles. */
const SWEEP_EVERY_MS = 60_000;
const ALARMS_METRIC = 'cordon_gateway_alarms_total';

type DenialRule = NonNullable<Limits['onDenials']>;
export type AlarmAction = 'revoke_session' | 'alert';

/**
 * The limits that bind a chain: every policy along it must hold, so the strictest applies. For
 * `on_denials` that is one rule at least as strict as each: the smallest count, over the longest
 * window, revoking if any policy says so (a sub-agent cannot loosen what its root set, nor the root
 * what its sub-agent's policy asks).
 */
export function strictestLimits(policies: readonly Policy[]): Limits {
  let callsPerMinute: number | undefined;
  let onDenials: DenialRule | undefined;
  for (const { limits } of policies) {
    if (limits.callsPerMinute !== undefined) callsPerMinute = Math.min(callsPerMinute ?? Infinity, limits.callsPerMinute);
    const d = limits.onDenials;
    if (!d) continue;
    const revoke = d.then === 'revoke_session' || onDenials?.then === 'revoke_session';
    onDenials = {
      count: Math.min(onDenials?.count ?? Infinity, d.count),
      withinSec: Math.max(onDenials?.withinSec ?? 0, d.withinSec),
      ...(revoke ? { then: 'revoke_session' as const } : {}),
    };
  }
  return { ...(callsPerMinute !== undefined ? { callsPerMinute } : {}), ...(onDenials ? { onDenials } : {}) };
}

/**
 * Whether a refusal counts towards `on_denials`: the caller asked for something it may not have
 * (4xx). Not a rate-limit refusal (that is the other limit, and clients retry it), nor the gateway's
 * or an upstream's failure (5xx), which say nothing about the caller.
 */
export const isRefusalOfCaller = (e: CordonError): boolean => e.status >= 400 && e.status < 500 && e.status !== 429;

interface Denial {
  at: number;
  tag: string;
  target: string | undefined;
}

interface SessionState {
  /** Broker-clock times of the calls admitted in the last minute, oldest first. */
  calls: number[];
  /** Refusals inside the on_denials window, oldest first (never more than its count). */
  denials: Denial[];
  /** When the last alarm went off: at most one per window. */
  alarmedAt: number | undefined;
  lastSeen: number;
  /** After this long without activity nothing here can matter any more. */
  keepMs: number;
}

export class GatewayLimits {
  readonly #b: Broker;
  readonly #sessions = new Map<string, SessionState>();
  readonly #inflight = new Set<Promise<void>>();
  #sweptAt = -Infinity;
  #sweepAtSize = 1024;

  constructor(b: Broker) {
    this.#b = b;
  }

  /** Before forwarding: refuses (429, Retry-After) a call past the chain's calls_per_minute, else counts it. */
  admit(p: GatewayPrincipal): void {
    const limit = strictestLimits(p.chainPolicies).callsPerMinute;
    if (limit === undefined) return;
    const now = this.#b.clock.now();
    const { calls } = this.#state(p.view.sid, now, MINUTE_MS);
    while (calls.length && calls[0] <= now - MINUTE_MS) calls.shift();
    if (calls.length >= limit) {
      // A slot frees when enough of the oldest calls leave the window to bring the count under the limit.
      const retryAfter = Math.max(1, Math.ceil((calls[calls.length - limit] + MINUTE_MS - now) / 1000));
      throw new CordonError(
        'temporarily_unavailable',
        `rate limited: this session may make ${limit} calls per minute through the gateway (the strictest limits of its chain); retry in ${retryAfter}s`,
        { status: 429, reason: 'rate_limited', auditParams: { retry_after: retryAfter, calls_per_minute: limit } },
      );
    }
    calls.push(now);
  }

  /**
   * After refusing a known caller: counts the refusal, and when the chain's on_denials count is
   * reached within its window raises the alarm. Returns a promise only then, which settles once the
   * alarm row and any revocation have committed (so the caller can answer after it: the
   * agent's next call is already refused); the webhook is never waited for.
   */
  denied(p: GatewayPrincipal, refusal: CordonError, target?: string): Promise<void> | undefined {
    if (!isRefusalOfCaller(refusal)) return undefined;
    const rule = strictestLimits(p.chainPolicies).onDenials;
    if (!rule) return undefined;
    const now = this.#b.clock.now();
    const withinMs = rule.withinSec * 1000;
    const s = this.#state(p.view.sid, now, withinMs);
    s.denials.push({ at: now, tag: refusal.reason, target });
    while (s.denials.length && (s.denials[0].at <= now - withinMs || s.denials.length > rule.count)) s.denials.shift();
    if (s.denials.length < rule.count) return undefined;
    if (s.alarmedAt !== undefined && now - s.alarmedAt < withinMs) return undefined;
    s.alarmedAt = now;
    const burst = s.denials.splice(0);
    return this.#track(this.#raise(p, rule, burst, now));
  }

  /** A revoked session's state goes at once (its calls are refused before reaching the limits). */
  forget(r: Revoked): void {
    for (const sid of r.sids) this.#sessions.delete(sid);
  }

  /** Resolves when alarms under way (rows, revocations, webhook POSTs) have finished: for shutdown and tests. */
  async idle(): Promise<void> {
    while (this.#inflight.size) await Promise.allSettled([...this.#inflight]);
  }

  /** Sessions with limit state held (for status and tests). */
  get size(): number {
    return this.#sessions.size;
  }

  async #raise(p: GatewayPrincipal, rule: DenialRule, burst: Denial[], at: number): Promise<void> {
    const b = this.#b;
    const action: AlarmAction = rule.then ?? 'alert';
    const sid = p.view.sid;
    const agentId = p.claims.client_id;
    const facts = {
      count: rule.count,
      within_sec: rule.withinSec,
      upstream: burst[burst.length - 1].target ?? null,
      reason_tags: [...new Set(burst.map((d) => d.tag))],
      action,
    };
    b.log.warn({ agent_id: agentId, sid, ...facts }, 'gateway alarm: a burst of refusals in one session');
    this.#alarmsCounter()?.inc({ action });
    this.#post({
      type: 'cordon.alarm',
      alarm: 'denial_burst',
      at: new Date(at).toISOString(),
      issuer: b.config.issuer,
      agent_id: agentId,
      sid,
      chain: p.chain,
      ...facts,
    });
    try {
      await b.issuance.appendAudit({
        at,
        event: 'alarm',
        decision: 'info',
        agentId,
        sid,
        jti: p.view.jti,
        chain: p.chain,
        reason: `denial_burst: ${rule.count} refusals within ${rule.withinSec}s in session ${sid}${action === 'revoke_session' ? '; revoking the session' : ''}`,
        params: facts,
      });
    } catch (e) {
      b.log.error({ err: (e as Error).message, sid }, 'could not write the alarm row');
    }
    if (action !== 'revoke_session') return;
    try {
      await revokeSession(b, sid, { actor: 'gateway', via: 'limits' });
    } catch (e) {
      b.log.error({ err: (e as Error).message, sid }, 'could not revoke the session a denial burst asked to revoke');
    }
  }

  /** The alarm as JSON to CORDON_ALERT_WEBHOOK: ids only, never a token or secret; failures are logged, never retried. */
  #post(alarm: Record<string, unknown>): void {
    const url = this.#b.config.alertWebhook;
    if (!url) return;
    const send = async (): Promise<void> => {
      try {
        const r = await request(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(alarm),
          headersTimeout: WEBHOOK_TIMEOUT_MS,
          bodyTimeout: WEBHOOK_TIMEOUT_MS,
          signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
        });
        await r.body.dump();
        if (r.statusCode >= 300) this.#b.log.warn({ status: r.statusCode }, 'the alert webhook refused an alarm');
      } catch (e) {
        // Never the URL: webhook URLs often carry their own secret.
        this.#b.log.warn({ err: (e as Error & { code?: string }).code ?? (e as Error).name }, 'could not POST an alarm to CORDON_ALERT_WEBHOOK');
      }
    };
    void this.#track(send());
  }

  #alarmsCounter(): Counter<'action'> | undefined {
    const m = this.#b.metrics;
    if (!m) return undefined;
    return (
      (m.registry.getSingleMetric(ALARMS_METRIC) as Counter<'action'> | undefined) ??
      new Counter({
        name: ALARMS_METRIC,
        help: 'Alarms the gateway raised for bursts of refusals in one session, by action taken.',
        labelNames: ['action'] as const,
        registers: [m.registry],
      })
    );
  }

  #track(work: Promise<void>): Promise<void> {
    this.#inflight.add(work);
    void work.finally(() => this.#inflight.delete(work));
    return work;
  }

  #state(sid: string, now: number, keepMs: number): SessionState {
    this.#sweep(now);
    let s = this.#sessions.get(sid);
    if (!s) {
      s = { calls: [], denials: [], alarmedAt: undefined, lastSeen: now, keepMs };
      this.#sessions.set(sid, s);
    }
    s.lastSeen = now;
    s.keepMs = Math.max(s.keepMs, keepMs);
    return s;
  }

  /** Drops sessions idle past their longest window: their calls, refusals and last alarm are all out of it. */
  #sweep(now: number): void {
    if (now - this.#sweptAt < SWEEP_EVERY_MS && this.#sessions.size < this.#sweepAtSize) return;
    this.#sweptAt = now;
    for (const [sid, s] of this.#sessions) if (now - s.lastSeen >= s.keepMs) this.#sessions.delete(sid);
    this.#sweepAtSize = Math.max(1024, 2 * this.#sessions.size);
  }
}
