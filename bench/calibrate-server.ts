/**
 * Calibration for `npm run bench`: the fastest a Node HTTP server answers a small form POST on this
 * machine (no framework, no database, no crypto). Prints `LISTENING=<url>`.
 *
 * Also the gateway scenario's upstream: given an Authorization value as argument, it answers 401 to
 * any request without exactly that header, so every call of the run proves the credential was injected.
 */
import { createServer } from 'node:http';

const expected = process.argv[2];
const body = JSON.stringify({ active: true, scope: 'docs:read web:search', client_id: 'agt_xxxxxxxxxxxxxxxxxxxxxx' });
const refused = JSON.stringify({ error: 'the injected Authorization header is missing or wrong' });
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const ok = expected === undefined || req.headers.authorization === expected;
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(ok ? body : refused) });
    res.end(ok ? body : refused);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`LISTENING=http://127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
