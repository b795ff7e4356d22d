import type { Logger } from 'pino';
import type { Clock } from './clock.ts';
import type { Config } from './config/index.ts';
import { openBroker, closeBroker, type Broker } from './broker.ts';
import { listen, type RunningServer } from './http/server.ts';
import type { AppExtensions } from './http/app.ts';

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
  const ext: Required<AppExtensions> = { routes: [] };
  const stops: Array<() => Promise<void>> = [];
  try {
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
