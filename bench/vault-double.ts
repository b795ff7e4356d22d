/**
 * The test Vault double as a standalone process for `npm run bench` (credential issue).
 * Prints `VAULT_ADDR=<url>` once listening; the root token is `root-token`.
 */
import { VaultDouble } from '../test/doubles/vault.ts';

const vault = new VaultDouble('root-token');
// The Vault policies the shipped policies/ name for child tokens.
for (const p of ['docs-rw', 'tickets-read']) vault.setPolicyPaths(p, ['secret/data/*']);
vault.addDatabaseRole('tickets-ro', 600);
const url = await vault.start();
// The double records every request for tests; under load that would only grow.
setInterval(() => {
  vault.requests.length = 0;
}, 500).unref();
process.stdout.write(`VAULT_ADDR=${url}\n`);
const stop = async () => {
  await vault.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
