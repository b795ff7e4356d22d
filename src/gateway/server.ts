/**
 * The gateway's front door: one node:http server (CONNECT and absolute-URI requests need a bare
 * server, and the hot path needs no framework). It routes and maps errors; the steps decide.
 *
 *   /u/{upstream}/…   reverse mode (reverse.ts)
 *   /mcp/{upstream}   MCP Streamable HTTP, judged per message (mcp/route.ts)
 *   CONNECT, absolute-URI requests   the forward proxy (egress.ts)
 *   /upstreams        what the caller's token may call (discovery.ts)
 *   /.well-known/oauth-protected-resource/mcp/{upstream}   RFC 9728 metadata of an MCP upstream (mcp-metadata.ts)
 *   /healthz          liveness of the gateway itself, and what it has open (ops.ts)
 *   /metrics          only when serving alone (ops.ts); beside the broker, its /metrics has the gateway's too
 *   anything else     404 JSON; protocol upgrades are refused (nothing here speaks them)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Broker } from '../broker.ts';
import { Attempt } from '../audit/attempt.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { CordonError } from '../errors.ts';
import { answerClientError } from '../http/server.ts';
import { gatewayMetricsFor } from '../observability/gateway-metrics.ts';
import { metricsFor } from '../observability/metrics.ts';
import { CallAudit } from './call-audit.ts';
import type { GatewayContext } from './context.ts';
import { upstreamPool } from './forward.ts';
import { GatewayLimits } from './limits.ts';
import { OpenCalls } from './open-calls.ts';
import { opsRoutes } from './ops.ts';
import { refuseOnSocket, reply } from './replies.ts';
import { handleReverse, REVERSE_PREFIX } from './reverse.ts';
import { GatewaySecrets } from './secrets.ts';
import { egressDeps } from './egress-audit.ts';
import { DISCOVERY_PATH, handleDiscovery } from './discovery.ts';
import { handleMcpMetadata, MCP_METADATA_PREFIX } from './mcp-metadata.ts';
import { handleAbsoluteUri, handleConnect } from './egress.ts';
import { handleMcp } from './mcp/route.ts';
import { MCP_PREFIX } from './mcp/replies.ts';
import type { Lookup } from './egress-rules.ts';

export interface RunningGateway {
  server: Server;
  url: string;
  context: GatewayContext;
  close(): Promise<void>;
}

/**
 * Starts the gateway on `port` (0 picks one) beside, or without, the broker's HTTP server. Its
 * metrics go on the broker's registry when there is one; `serveMetrics` (the gateway alone) makes
 * one and serves it at `/metrics`.
 */
export interface GatewayOptions {
  port: number;
  host?: string;
  url?: string;
  serveMetrics?: boolean;
  /** Name resolution for egress (tests give names addresses; default: the system resolver). */
  lookup?: Lookup;
}

export async function startGateway(b: Broker, opts: GatewayOptions): Promise<RunningGateway> {
  if (opts.serveMetrics) metricsFor(b, { defaultMetrics: true });
  const metrics = b.metrics ? gatewayMetricsFor(b, b.metrics) : undefined;
  // The broker's own cache: a revocation learned once reaches introspection, /credentials and every call here.
  const tokens = b.live;
  await tokens.start();
  const g: GatewayContext = {
    b,
    tokens,
    secrets: new GatewaySecrets(b),
    open: new OpenCalls(),
    audit: new CallAudit(b),
    limits: new GatewayLimits(b),
    dispatcher: upstreamPool(),
    url: opts.url ?? b.config.gatewayUrl,
    ...(opts.lookup ? { lookup: opts.lookup } : {}),
    observe: metrics ? (o) => metrics.record(o) : () => {},
  };
  const stopCounting = metrics?.addSource(() => g.open.counts());
  const ops = opsRoutes(g, { serveMetrics: opts.serveMetrics === true });
  const stopHearing = tokens.onRevoked((r) => {
    g.secrets.drop(r);
    g.open.close(r);
    g.limits.forget(r);
  });
  const server = createServer((req, res) => void route(g, ops, req, res));
  server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => void handleConnect(egressDeps(g, req), req, socket, head));
  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    const e = new CordonError('invalid_request', 'protocol upgrades are not allowed through the gateway', { reason: 'upgrade_refused' });
    refuseOnSocket(socket, e);
    g.audit.call('gateway.call', routeAttempt(req), 'deny', {}, e);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => void answerClientError(b, err, socket));
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 20_000;
  // Long streams (SSE) are the upstream's business; the upstream timeout bounds silence instead.
  server.requestTimeout = 0;
  const host = opts.host ?? b.config.host;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen on ${host}:${opts.port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.message} (CORDON_GATEWAY_PORT, HOST)`)),
    );
    server.listen(opts.port, host, () => resolve());
  }).catch(async (e: unknown) => {
    stopHearing();
    stopCounting?.();
    await tokens.stop();
    await g.dispatcher.close();
    throw e;
  });
  const addr = server.address();
  const url = typeof addr === 'object' && addr ? `http://${host}:${addr.port}` : `http://${host}:${opts.port}`;
  if (!opts.url && opts.port === 0) g.url = url;
  return {
    server,
    url,
    context: g,
    async close() {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      await g.limits.idle();
      await g.audit.idle();
      stopCounting?.();
      stopHearing();
      await tokens.stop();
      await g.dispatcher.close();
    },
  };
}

async function route(g: GatewayContext, ops: ReturnType<typeof opsRoutes>, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const url = req.url ?? '';
    if (url.startsWith(REVERSE_PREFIX)) return await handleReverse(g, req, res);
    if (url.startsWith(MCP_PREFIX)) return await handleMcp(g, req, res);
    if (url === DISCOVERY_PATH && req.method === 'GET') return await handleDiscovery(g, req, res);
    if (url.startsWith(MCP_METADATA_PREFIX)) return await handleMcpMetadata(g, req, res);
    if (await ops(req, res)) return;
    if (!url.startsWith('/')) return await handleAbsoluteUri(egressDeps(g, req), req, res);
    throw new CordonError('not_found', 'not found: call upstreams at /u/{upstream}/{path}, MCP upstreams at /mcp/{upstream}', { reason: 'route_unknown' });
  } catch (e) {
    // What a route refused without a row of its own (an unknown route or metadata document) is audited here, once.
    const err = e instanceof CordonError ? e : new CordonError('server_error', 'the gateway failed unexpectedly');
    reply(res, err, req.complete ? {} : { connection: 'close' });
    g.audit.call('gateway.call', routeAttempt(req), 'deny', {}, err);
  }
}

/** The attempt of a request refused at the front door, before any route knew who asked. */
function routeAttempt(req: IncomingMessage): Attempt {
  return new Attempt('gateway.call', clientAddressOf(req.socket.remoteAddress)).note({ method: req.method, path: (req.url ?? '').split('?')[0].slice(0, 256) });
}
