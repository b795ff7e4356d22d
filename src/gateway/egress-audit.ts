/**
 * The forward proxy's ties to the rest of the gateway, per exchange: its token check is the
 * gateway's, its tunnels are closed by revocation like every open call, and each exchange ends in
 * one `egress.connect` audit row (host, port, address, bytes, duration), allowed or refused.
 */
import type { IncomingMessage } from 'node:http';
import { Attempt } from '../audit/attempt.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { CordonError } from '../errors.ts';
import { principalOfToken } from './authenticate.ts';
import type { GatewayContext } from './context.ts';
import type { EgressDeps, EgressRecord } from './egress.ts';

const CONNECT_TIMEOUT_MS = 10_000;

export function egressDeps(g: GatewayContext, req: IncomingMessage): EgressDeps {
  const attempt = new Attempt('egress.connect', clientAddressOf(req.socket.remoteAddress));
  return {
    authenticate: (token) => principalOfToken(g, token, attempt),
    record: (row) => recordEgress(g, attempt, row),
    admit: (p) => g.limits.admit(p),
    track: (p, close) => g.open.track(p, 'tunnel', 'egress', close),
    now: () => g.b.clock.now(),
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    ...(g.lookup ? { lookup: g.lookup } : {}),
  };
}

function recordEgress(g: GatewayContext, attempt: Attempt, row: EgressRecord): void {
  try {
    if (row.principal) attempt.by(row.principal.claims.client_id, row.principal.chain).in(row.principal.view.sid, row.principal.view.jti);
    const facts = {
      host: row.host,
      port: row.port,
      ...(row.address ? { address: row.address } : {}),
      status: row.status,
      bytes_in: row.bytesIn,
      bytes_out: row.bytesOut,
      duration_ms: row.durationMs,
    };
    const refusal =
      row.decision === 'deny'
        ? new CordonError(row.status === 407 || row.status === 401 ? 'invalid_token' : 'access_denied', row.description ?? 'refused', {
            reason: row.reason ?? 'egress_refused',
          })
        : undefined;
    g.audit.call('egress.connect', attempt, row.decision, facts, refusal);
    if (refusal && row.principal) void g.limits.denied(row.principal, refusal, row.host);
  } catch (e) {
    g.b.log.error({ err: (e as Error).message }, 'could not record an egress exchange');
  }
}
