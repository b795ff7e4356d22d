/**
 * A forward proxy on a bare node:http server wired to the egress handlers with a fake
 * authenticate (tokens map to hand-made principals), a recording `record` and `track`, and an
 * injected resolver that counts its calls; plus destinations that record what they received.
 */
import { once } from 'node:events';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { CordonError } from '../src/errors.ts';
import { type EgressDeps, type EgressRecord, handleAbsoluteUri, handleConnect } from '../src/gateway/egress.ts';
import type { GatewayPrincipal } from '../src/gateway/principal.ts';
import type { EgressRule, Policy } from '../src/policy/types.ts';

export function policy(name: string, egress: EgressRule[]): Policy {
  return {
    name,
    description: '',
    file: `${name}.yaml`,
    tokenTtl: 600,
    sessionTtl: 3600,
    scopes: [],
    audiences: [],
    delegation: { maxDepth: 1, scopes: [] },
    credentials: {},
    requireDpop: false,
    federation: [],
    upstreams: {},
    egress,
    limits: {},
  };
}

/** Only the fields egress reads are real; the token record's claims and view are not its business. */
export function principal(chainPolicies: Policy[], expiresAt = Date.now() + 3_600_000): GatewayPrincipal {
  return {
    chain: chainPolicies.map((p) => `agent-${p.name}`),
    scopes: [],
    rootPolicy: chainPolicies[0],
    chainPolicies,
    expiresAt,
  } as unknown as GatewayPrincipal;
}

export interface Proxy {
  port: number;
  rows: EgressRecord[];
  /** Every name the resolver was asked, in order. */
  lookups: string[];
  /** The `close` of every exchange currently tracked. */
  open: Set<() => void>;
  /** Resolves once `n` rows have been recorded. */
  recorded(n: number): Promise<EgressRecord[]>;
  close(): Promise<void>;
}

/**
 * `tokens` maps a token to its principal; any other token is refused as invalid_token.
 * `names` is the fake DNS: a name to its addresses (unknown names fail like ENOTFOUND).
 */
export async function startProxy(
  tokens: Record<string, GatewayPrincipal>,
  names: Record<string, string[]> = {},
  over: Partial<EgressDeps> = {},
): Promise<Proxy> {
  const rows: EgressRecord[] = [];
  const lookups: string[] = [];
  const open = new Set<() => void>();
  const waiters: Array<() => void> = [];
  const deps: EgressDeps = {
    authenticate: async (token) => {
      const p = tokens[token];
      if (!p) throw new CordonError('invalid_token', 'the token is not active');
      return p;
    },
    record: (row) => {
      rows.push(row);
      waiters.splice(0).forEach((w) => w());
    },
    track: (_p, close) => {
      open.add(close);
      return () => open.delete(close);
    },
    now: () => Date.now(),
    connectTimeoutMs: 2000,
    lookup: async (host) => {
      lookups.push(host);
      const addresses = names[host];
      if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    },
    ...over,
  };
  const server = createServer((req, res) => {
    // Any absolute-form target goes to the proxy (which refuses what it does not speak); origin-form is not ours.
    if (!(req.url ?? '').startsWith('/')) void handleAbsoluteUri(deps, req, res);
    else res.writeHead(404).end();
  });
  server.on('connect', (req, socket: Socket, head: Buffer) => void handleConnect(deps, req, socket, head));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return {
    port: (server.address() as AddressInfo).port,
    rows,
    lookups,
    open,
    async recorded(n) {
      while (rows.length < n) await new Promise<void>((r) => waiters.push(r));
      return rows;
    },
    async close() {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

export interface Reply {
  status: number;
  head: string;
  body: string;
  /** The client's socket: still open after a 200 (the tunnel), ended after a refusal. */
  socket: Socket;
}

/** Sends a raw CONNECT (with `extra` bytes right behind its headers) and reads the proxy's answer. */
export async function connectVia(proxyPort: number, target: string, auth?: string, extra = ''): Promise<Reply> {
  const socket = connect(proxyPort, '127.0.0.1');
  await once(socket, 'connect');
  const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
  if (auth !== undefined) lines.push(`Proxy-Authorization: ${auth}`);
  socket.write(`${lines.join('\r\n')}\r\n\r\n${extra}`);
  return readReply(socket);
}

/** Reads one HTTP response head from a raw socket; for anything but 200 also the body up to the socket's end. */
export function readReply(socket: Socket): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1');
      const status = Number(head.split(' ')[1]);
      if (status !== 200) return; // a refusal: read to the end
      socket.off('data', onData);
      const rest = buf.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ status, head, body: '', socket });
    };
    socket.on('data', onData);
    socket.on('error', reject);
    socket.once('end', () => {
      const text = buf.toString('utf8');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`connection ended without a response: ${JSON.stringify(text)}`));
      resolve({ status: Number(text.split(' ')[1]), head: text.slice(0, end), body: text.slice(end + 4), socket });
    });
  });
}

/** Reads from a socket until `n` bytes have arrived. */
export async function readBytes(socket: Socket, n: number): Promise<string> {
  let got = '';
  while (Buffer.byteLength(got) < n) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    got += chunk.toString('utf8');
  }
  return got;
}

/** A TCP destination that records every byte it gets and answers each chunk with `pong:<chunk>`. */
export async function startEcho(): Promise<{ port: number; received: string[]; connections: number; sockets: Socket[]; close(): Promise<void> }> {
  const state = { port: 0, received: [] as string[], connections: 0, sockets: [] as Socket[], close: async () => undefined };
  const server = createNetServer((s) => {
    state.connections++;
    state.sockets.push(s);
    s.on('error', () => undefined);
    s.on('data', (d) => {
      state.received.push(d.toString('utf8'));
      s.write(`pong:${d.toString('utf8')}`);
    });
    s.on('end', () => s.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.port = (server.address() as AddressInfo).port;
  state.close = async () => {
    for (const s of state.sockets) s.destroy();
    server.close();
    await once(server, 'close');
  };
  return state;
}

export interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An HTTP destination that records each request and answers 201 with a body (or never answers, with `hang`). */
export async function startTarget(opts: { hang?: boolean } = {}): Promise<{ port: number; received: Received[]; server: Server; close(): Promise<void> }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      if (opts.hang) return;
      res.writeHead(201, { 'content-type': 'text/plain', 'x-target': 'yes', connection: 'keep-alive, x-hop', 'x-hop': 'for the next hop only' });
      res.end(`hello from ${req.url}`);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    received,
    server,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** An absolute-URI request through the proxy; resolves with status, headers and body. */
export function proxyGet(
  proxyPort: number,
  uri: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean } = {},
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: proxyPort, path: uri, method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.chunked) req.setHeader('transfer-encoding', 'chunked');
    req.end(opts.body);
  });
}

export const bearer = (token: string): string => `Bearer ${token}`;
export const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
