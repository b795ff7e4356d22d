import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Broker } from '../broker.ts';
import { sessions } from '../store/sessions.ts';
import { tokens } from '../store/tokens.ts';

/**
 * Prometheus metrics, one registry per broker (never prom-client's global one, so several
 * brokers in one process — tests, the demo — keep their numbers apart).
 */
export interface BrokerMetrics {
  registry: Registry;
  issued: Counter<'event'>;
  refused: Counter<'event' | 'reason'>;
  httpDuration: Histogram<'method' | 'route' | 'status'>;
  backendErrors: Counter<'provider' | 'reason'>;
  liveSessions: Gauge;
  liveTokens: Gauge;
}

/** Label values come from code and from error codes; anything else collapses to `other` so cardinality stays bounded. */
export const label = (v: string | null | undefined, pattern = /^[a-z][a-z0-9_.-]{0,47}$/): string => (v && pattern.test(v) ? v : 'other');
/** Denial reasons are written `code: description`; only the code becomes a label (`aws-sts_timeout` keeps its provider's dash). */
const reasonLabel = (reason: string | null): string => label((reason ?? '').split(':')[0].trim(), /^[a-z][a-z_-]{0,47}$/);

/** The broker's metrics, created on first use and wired to its decision hook. */
export function metricsFor(b: Broker, opts: { defaultMetrics?: boolean } = {}): BrokerMetrics {
  if (b.metrics) return b.metrics;
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'cordon_process_' });
  const issued = new Counter({
    name: 'cordon_issued_total',
    help: 'Grants issued (sessions opened, tokens, delegations, backend credentials), by audit event.',
    labelNames: ['event'] as const,
    registers: [registry],
  });
  const refused = new Counter({
    name: 'cordon_refused_total',
    help: 'Requests refused, by audit event attempted and stable reason tag.',
    labelNames: ['event', 'reason'] as const,
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: 'cordon_http_request_duration_seconds',
    help: 'HTTP request latency by route.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const backendErrors = new Counter({
    name: 'cordon_backend_errors_total',
    help: 'Errors from credential backends (Vault, AWS STS), by provider and kind.',
    labelNames: ['provider', 'reason'] as const,
    registers: [registry],
  });
  const countOr = async (what: string, f: () => Promise<Array<{ count: number }>>): Promise<number | null> => {
    try {
      return (await f()).reduce((n, r) => n + r.count, 0);
    } catch (e) {
      b.log.warn({ err: (e as Error).message }, `metrics: could not count ${what}`);
      return null;
    }
  };
  const liveSessions = new Gauge({
    name: 'cordon_live_sessions',
    help: 'Sessions neither expired nor revoked.',
    registers: [registry],
    async collect() {
      const n = await countOr('live sessions', () => sessions.countLive(b.db, b.clock.now()));
      if (n !== null) this.set(n);
    },
  });
  const liveTokens = new Gauge({
    name: 'cordon_live_tokens',
    help: 'Access tokens neither expired nor revoked.',
    registers: [registry],
    async collect() {
      const n = await countOr('live tokens', () => tokens.countLive(b.db, b.clock.now()));
      if (n !== null) this.set(n);
    },
  });
  const m: BrokerMetrics = { registry, issued, refused, httpDuration, backendErrors, liveSessions, liveTokens };
  b.hooks.onDecision.push((event, decision, reason) => {
    if (decision === 'allow') issued.inc({ event: label(event) });
    else refused.inc({ event: label(event), reason: reasonLabel(reason) });
  });
  b.metrics = m;
  return m;
}

/**
 * Counts a backend failure by provider and ProviderError kind (`timeout`, `sealed`, `refused`,
 * `down`, …); called where provider errors are handled (tokens/credentials.ts: failed issues and
 * failed revocations). A no-op when the broker runs without metrics.
 */
export function recordBackendError(b: Broker, provider: string, reason: string): void {
  b.metrics?.backendErrors.inc({ provider: label(provider), reason: label(reason) });
}
