/**
 * What `cordon serve` does, without the CLI: loadConfig from the environment, startBroker, stop on
 * SIGTERM (so `--cpu-prof` gets to write its profile). The bench uses it when `bin/cordon.js serve`
 * cannot start, and for `--server=core`.
 *
 * BENCH_SERVER=core serves the broker core alone — openBroker + the HTTP app with no runtime
 * extensions (no request logging, metrics, credential routes or sweeper) — to show what those cost.
 */
import pino from 'pino';
import { loadConfig } from '../src/config/index.ts';
import { startBroker } from '../src/runtime.ts';
import { openBroker, closeBroker } from '../src/broker.ts';
import { listen } from '../src/http/server.ts';

const config = loadConfig();
let stopServer: () => Promise<void>;
if (process.env.BENCH_SERVER === 'core') {
  const b = await openBroker(config, { log: pino({ level: config.logLevel }), auditPolicyLoad: true });
  const server = await listen(b, {}, config.port);
  stopServer = async () => {
    await server.close();
    await closeBroker(b);
  };
} else {
  const r = await startBroker(config);
  stopServer = () => r.stop();
}
const stop = async () => {
  await stopServer();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
