import type { Logger } from 'pino';
import type { Clock } from './clock.ts';
import type { Config } from './config/index.ts';
import { openBroker, closeBroker, type Broker } from './broker.ts';
import { listen, type RunningServer } from './http/server.ts';
import type { AppExtensions } from './http/app.ts';
import { mountRequestLogging } from './http/logging.ts';
import { mountMetrics } from './http/metrics.ts';
import { credentialsRoute } from './http/credentials.ts';
import { startBackendCredentials } from './credentials/sweep.ts';
import { startCheckpoints } from './audit/checkpoint.ts';
import { startGateway, type RunningGateway } from './gateway/server.ts';

export interface RunningBroker {
  b: Broker;
  server: RunningServer;
  url: string;
  /** The gateway, unless CORDON_GATEWAY_PORT is off. */
  gateway?: RunningGateway;
  stop(): Promise<void>;
}

export interface StartOptions {
  clock?: Clock;
  log?: Logger;
  port?: number;
  /** Overrides CORDON_GATEWAY_PORT (null: no gateway). */
  gatewayPort?: number | null;
}

/**
 * Starts parts of a running broker in order with `start`, each returning its stop; on success the
 * stop of the whole undoes them in reverse, writes the last rows and closes the database; on a
 * failure part-way the parts already started are stopped the same way and the error rethrown.
 */
async function assemble<T>(b: Broker, start: (started: (stop: () => Promise<void>) => void) => Promise<T>): Promise<T & { stop(): Promise<void> }> {
  const stops: Array<() => Promise<void>> = [];
  try {
    const parts = await start((stop) => stops.push(stop));
    return {
      ...parts,
      async stop() {
        for (const s of stops.reverse()) await s();
        // Rows of the last calls through the gateway are written before the database closes.
        await b.issuance.idle();
        await closeBroker(b);
      },
    };
  } catch (e) {
    for (const s of stops.reverse()) await s().catch(() => {});
    await closeBroker(b);
    throw e;
  }
}

/**
 * A whole running broker: database, keys, policies, optional subsystems (providers, sweeper,
 * metrics) and the HTTP server. `cordon serve`, `cordon demo` and end-to-end tests start it here.
 */
export async function startBroker(config: Config, opts: StartOptions = {}): Promise<RunningBroker> {
  const b = await openBroker(config, { clock: opts.clock, log: opts.log, auditPolicyLoad: true });
  const ext: Required<AppExtensions> = { routes: [], before: [mountRequestLogging, (app, b2) => mountMetrics(app, b2, { defaultMetrics: true })] };
  return assemble(b, async (started) => {
    // Signed audit checkpoints every minute; stopped last, so the final one covers every row written.
    const checkpoints = startCheckpoints(b);
    started(() => checkpoints.stop());
    // Backend credentials: providers, revocation reaching them, the sweeper (first run recovers orphans).
    const creds = await startBackendCredentials(b);
    started(() => creds.stop());
    ext.routes.push(credentialsRoute);
    const server = await listen(b, ext, opts.port ?? config.port);
    started(() => server.close());
    const gatewayPort = opts.gatewayPort === undefined ? config.gatewayPort : opts.gatewayPort;
    const gateway = gatewayPort === null ? undefined : await startGateway(b, { port: gatewayPort });
    if (gateway) started(() => gateway.close());
    return { b, server, url: server.url, gateway };
  });
}

/**
 * `cordon gateway`: the gateway alone, on the same database, policies and providers as the broker
 * (it issues the backend credentials it injects, and revokes them with their sessions).
 */
export async function startGatewayAlone(
  config: Config,
  opts: { clock?: Clock; log?: Logger; port?: number } = {},
): Promise<{ b: Broker; gateway: RunningGateway; stop(): Promise<void> }> {
  const b = await openBroker(config, { clock: opts.clock, log: opts.log });
  return assemble(b, async (started) => {
    const creds = await startBackendCredentials(b);
    started(() => creds.stop());
    // No broker HTTP server here: the gateway serves the metrics itself.
    const gateway = await startGateway(b, { port: opts.port ?? config.gatewayPort ?? 8081, serveMetrics: true });
    started(() => gateway.close());
    return { b, gateway };
  });
}
