/**
 * The gateway's own operational endpoints. `GET /healthz`: liveness, and what is open right now
 * (open calls and tunnels live only in this process's memory; `cordon status` reads them here).
 * `GET /metrics`, only when the gateway serves without the broker's HTTP server (`cordon
 * gateway`): the same registry and the same bearer rule (CORDON_METRICS_TOKEN) as the broker's.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Attempt } from '../audit/attempt.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { recordRefusal } from '../audit/refusals.ts';
import { metricsReader, metricsTokenRefusal } from '../http/metrics.ts';
import type { GatewayContext } from './context.ts';
import { reply } from './replies.ts';

export interface HealthAnswer {
  ok: true;
  open: {
    calls: number;
    tunnels: number;
    /** Open calls per upstream: only for whoever may read metrics (upstream names are policy detail). */
    upstreams?: Record<string, number>;
  };
}

/** Returns the handler of the operational routes: true when it answered the request. */
export function opsRoutes(g: GatewayContext, opts: { serveMetrics: boolean }): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  const mayRead = metricsReader(g.b);
  return async (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    if (path === '/healthz') {
      const open = g.open.counts();
      const body: HealthAnswer = {
        ok: true,
        open: {
          calls: Object.values(open.calls).reduce((n, c) => n + c, 0),
          tunnels: open.tunnels,
          ...(mayRead(req.headers.authorization) ? { upstreams: open.calls } : {}),
        },
      };
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
      return true;
    }
    if (path !== '/metrics' || !opts.serveMetrics || !g.b.metrics) return false;
    if (!mayRead(req.headers.authorization)) {
      const e = metricsTokenRefusal();
      await recordRefusal(g.b, new Attempt('metrics', clientAddressOf(req.socket.remoteAddress)), e).catch((err: Error) =>
        g.b.log.error({ err: err.message }, 'could not audit a refusal'),
      );
      reply(res, e);
      return true;
    }
    const text = await g.b.metrics.registry.metrics();
    res.writeHead(200, { 'content-type': g.b.metrics.registry.contentType, 'cache-control': 'no-store' });
    res.end(text);
    return true;
  };
}
