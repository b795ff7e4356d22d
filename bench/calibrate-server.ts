/**
 * Calibration for `npm run bench`: the fastest a Node HTTP server answers a small form POST on this
 * machine (no framework, no database, no crypto). Prints `LISTENING=<url>`.
 */
import { createServer } from 'node:http';

const body = JSON.stringify({ active: true, scope: 'docs:read web:search', client_id: 'agt_xxxxxxxxxxxxxxxxxxxxxx' });
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`LISTENING=http://127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
