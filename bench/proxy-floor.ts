/**
 * The gateway scenario's floor for `npm run bench`: a bare `node:http` reverse proxy, no framework,
 * doing the least the gateway's reverse mode must — `/u/{name}/{path}` to `{upstream}{path}` over a
 * keep-alive Agent, hop-by-hop headers and the caller's Authorization dropped, one static header
 * injected, the answer streamed back. No token check, no policy, no audit.
 *
 *   node --import tsx bench/proxy-floor.ts UPSTREAM_BASE_URL AUTHORIZATION_VALUE     prints LISTENING=<url>
 */
import { Agent, createServer, request, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';

const [base, authorization] = process.argv.slice(2);
if (!base || !authorization) throw new Error('usage: proxy-floor.ts UPSTREAM_BASE_URL AUTHORIZATION_VALUE');
const upstream = new URL(base);
const prefix = upstream.pathname.replace(/\/+$/, '');
// As many sockets as the gateway's undici pool allows (src/gateway/forward.ts).
const agent = new Agent({ keepAlive: true, maxSockets: 128, keepAliveMsecs: 10_000 });
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'authorization']);

function outgoing(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  out.authorization = authorization;
  return out;
}

const server = createServer((req, res) => {
  const url = req.url ?? '/';
  const slash = url.indexOf('/', 3);
  if (!url.startsWith('/u/') || slash < 0) {
    res.writeHead(404).end();
    return;
  }
  const up = request(
    { host: upstream.hostname, port: upstream.port, method: req.method, path: `${prefix}${url.slice(slash)}`, headers: outgoing(req.headers), agent },
    (answer) => {
      const headers = { ...answer.headers };
      delete headers.connection;
      delete headers['keep-alive'];
      delete headers['transfer-encoding'];
      res.writeHead(answer.statusCode ?? 502, headers);
      answer.pipe(res);
    },
  );
  up.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(up);
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`LISTENING=http://127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
