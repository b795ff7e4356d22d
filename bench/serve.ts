/**
 * What `cordon serve` does, without the CLI: loadConfig from the environment, startBroker, stop on
 * SIGTERM (so `--cpu-prof` gets to write its profile). The bench uses it when `bin/cordon.js serve`
 * cannot start (the CLI is being worked on) — the broker under test is the same startBroker either way.
 */
import { loadConfig } from '../src/config/index.ts';
import { startBroker } from '../src/runtime.ts';

const r = await startBroker(loadConfig());
const stop = async () => {
  await r.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
