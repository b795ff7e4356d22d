import { loadConfig } from '../config/index.ts';
import { startBroker } from '../runtime.ts';

/** Entry point; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    if (argv[0] === 'serve') {
      const config = loadConfig();
      const r = await startBroker(config);
      r.b.log.info({ issuer: config.issuer, listen: r.url, policies: r.b.policies.names() }, 'cordon broker listening');
      const stop = async () => {
        await r.stop();
        process.exit(0);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      await new Promise(() => {});
    }
    return 0;
  } catch (e) {
    process.stderr.write(`cordon: ${(e as Error).message}\n`);
    return 1;
  }
}
