/** What every step of the gateway shares: the broker, the token cache, held secrets, open calls, the audit writer, the limits, the upstream pool, the metrics hook. */
import type { Dispatcher } from 'undici';
import type { Broker } from '../broker.ts';
import type { GatewayCallObservation } from '../observability/gateway-metrics.ts';
import type { LiveTokenCache } from '../tokens/live-cache.ts';
import type { CallAudit } from './call-audit.ts';
import type { GatewayLimits } from './limits.ts';
import type { Lookup } from './egress-rules.ts';
import type { OpenCalls } from './open-calls.ts';
import type { GatewaySecrets } from './secrets.ts';

export interface GatewayContext {
  b: Broker;
  tokens: LiveTokenCache;
  secrets: GatewaySecrets;
  open: OpenCalls;
  audit: CallAudit;
  /** Per-session limits: every front door calls `limits.admit(p)` once a call is authorised and `limits.denied(p, e)` after refusing a known caller. */
  limits: GatewayLimits;
  dispatcher: Dispatcher;
  /** Egress name resolution, when not the system's (tests). */
  lookup?: Lookup;
  /** The gateway's public base URL (DPoP `htu`, metadata). */
  url: string;
  /** Told once about every call, allowed or refused (metrics); a no-op when the broker has none. */
  observe(o: GatewayCallObservation): void;
}
