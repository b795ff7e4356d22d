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

export interface RunningBroker {
  b: Broker;
  server: RunningServer;
  url: string;
  stop(): Promise<void>;
}

/**
 * A whole running broker: database, keys, policies, optional subsystems (providers, sweeper,
 * metrics) and the HTTP server. `cordon serve`, `cordon demo` and end-to-end tests start it here.
 */
export async function startBroker(config: Config, opts: { clock?: Clock; log?: Logger; port?: number } = {}): Promise<RunningBroker> {
  const b = await openBroker(config, { clock: opts.clock, log: opts.log, auditPolicyLoad: true });
  const ext: Required<AppExtensions> = { routes: [], before: [mountRequestLogging, (app, b2) => mountMetrics(app, b2, { defaultMetrics: true })] };
  const stops: Array<() => Promise<void>> = [];
  try {
    // Signed audit checkpoints every minute; stopped last, so the final one covers every row written.
    const checkpoints = startCheckpoints(b);
    stops.push(() => checkpoints.stop());
    // Backend credentials: providers, revocation reaching them, the sweeper (first run recovers orphans).
    const creds = await startBackendCredentials(b);
    stops.push(() => creds.stop());
    ext.routes.push(credentialsRoute);
    const server = await listen(b, ext, opts.port ?? config.port);
    return {
      b,
      server,
      url: server.url,
      async stop() {
        await server.close();
        for (const s of stops.reverse()) await s();
        await closeBroker(b);
      },
    };
  } catch (e) {
    for (const s of stops.reverse()) await s().catch(() => {});
    await closeBroker(b);
    throw e;
  }
}
