/**
 * The gateway's metrics, on the broker's registry: calls per upstream and outcome, refusals by
 * reason tag, how long upstreams take, and what is open right now. Reverse mode reports each call
 * once through `record` (the context's `observe` hook); nothing else in the gateway knows about
 * Prometheus.
 *
 * Labels stay bounded: an upstream label is a name some loaded policy defines (anything a caller
 * typed into `/u/{name}` otherwise collapses to `other`), and reason tags are the code's own.
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Broker } from '../broker.ts';
import { label, type BrokerMetrics } from './metrics.ts';

/** What the gateway tells metrics about one call, allowed or refused. */
export interface GatewayCallObservation {
  upstream: string;
  decision: 'allow' | 'deny';
  /** The HTTP status the caller got. */
  status: number;
  /** The refusal's (or upstream failure's) stable reason tag. */
  reason?: string;
  /** From sending to the upstream until its response headers (or its failure); absent when nothing was sent. */
  upstreamSeconds?: number;
}

/** Open calls per upstream and open tunnels, as one gateway counts them (gateway/open-calls.ts). */
export interface OpenCounts {
  calls: Record<string, number>;
  tunnels: number;
}

const REASON = /^[a-z][a-z0-9_-]{0,47}$/;

export class GatewayMetrics {
  readonly #calls: Counter<'upstream' | 'decision' | 'status_class'>;
  readonly #refusals: Counter<'upstream' | 'reason'>;
  readonly #upstreamSeconds: Histogram<'upstream'>;
  readonly #known: ReadonlySet<string>;
  /** Every gateway serving on this registry (usually one) adds how to count what it has open. */
  readonly #sources = new Set<() => OpenCounts>();

  constructor(m: BrokerMetrics, known: ReadonlySet<string>) {
    this.#known = known;
    const registers = [m.registry];
    this.#calls = new Counter({
      name: 'cordon_gateway_calls_total',
      help: 'Calls through the gateway, by upstream, decision (allow: forwarded, deny: refused) and the status class the caller got.',
      labelNames: ['upstream', 'decision', 'status_class'] as const,
      registers,
    });
    this.#refusals = new Counter({
      name: 'cordon_gateway_refusals_total',
      help: 'Calls the gateway refused, by upstream and stable reason tag.',
      labelNames: ['upstream', 'reason'] as const,
      registers,
    });
    this.#upstreamSeconds = new Histogram({
      name: 'cordon_gateway_upstream_seconds',
      help: 'Time from sending a call to the upstream until its response headers (or its failure), by upstream.',
      labelNames: ['upstream'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    const sources = this.#sources;
    const upstreamOf = (name: string): string => this.upstreamLabel(name);
    new Gauge({
      name: 'cordon_gateway_open_calls',
      help: 'Calls through the gateway in flight (streams included), by upstream.',
      labelNames: ['upstream'] as const,
      registers,
      collect() {
        this.reset();
        for (const count of sources) for (const [name, n] of Object.entries(count().calls)) this.inc({ upstream: upstreamOf(name) }, n);
      },
    });
    new Gauge({
      name: 'cordon_gateway_open_tunnels',
      help: 'Forward-proxy tunnels open through the gateway.',
      registers,
      collect() {
        let n = 0;
        for (const count of sources) n += count().tunnels;
        this.set(n);
      },
    });
  }

  /** The label for an upstream name: itself when a loaded policy defines it, `other` otherwise. */
  upstreamLabel(name: string): string {
    return this.#known.has(name) ? label(name, /^[a-z0-9][a-z0-9._-]{0,63}$/) : 'other';
  }

  record(o: GatewayCallObservation): void {
    const upstream = this.upstreamLabel(o.upstream);
    this.#calls.inc({ upstream, decision: o.decision, status_class: statusClass(o.status) });
    if (o.decision === 'deny') this.#refusals.inc({ upstream, reason: label(o.reason, REASON) });
    if (o.upstreamSeconds !== undefined) this.#upstreamSeconds.observe({ upstream }, o.upstreamSeconds);
  }

  /** Counts a gateway's open calls and tunnels in the gauges until the returned detach is called. */
  addSource(count: () => OpenCounts): () => void {
    this.#sources.add(count);
    return () => this.#sources.delete(count);
  }
}

const statusClass = (status: number): string => (status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other');

const byRegistry = new WeakMap<BrokerMetrics, GatewayMetrics>();

/** The gateway metrics of the broker's registry, created once (several gateways of one broker share them). */
export function gatewayMetricsFor(b: Broker, m: BrokerMetrics): GatewayMetrics {
  let g = byRegistry.get(m);
  if (!g) {
    const known = new Set(b.policies.list().flatMap((p) => Object.keys(p.upstreams)));
    g = new GatewayMetrics(m, known);
    byRegistry.set(m, g);
  }
  return g;
}
