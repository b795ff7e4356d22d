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
// The double records every request for tests; under load that would only grow. Keep a count only,
// which the bench asks for over IPC (to learn how many Vault calls one credential issue makes).
let seen = 0;
setInterval(() => {
  seen += vault.requests.length;
  vault.requests.length = 0;
}, 500).unref();
process.on('message', (m) => {
  if (m === 'count') process.send?.({ count: seen + vault.requests.length });
});
process.stdout.write(`VAULT_ADDR=${url}\n`);
const stop = async () => {
  await vault.stop();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
