import { loadConfig } from '../config/index.ts';
import { openBroker, closeBroker } from '../broker.ts';
import { listen } from '../http/server.ts';

/** Entry point; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    if (argv[0] === 'serve') {
      const config = loadConfig();
      const b = await openBroker(config, { auditPolicyLoad: true });
      const s = await listen(b);
      b.log.info({ issuer: config.issuer, listen: s.url, policies: b.policies.names() }, 'cordon broker listening');
      const stop = async () => {
        await s.close();
        await closeBroker(b);
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
