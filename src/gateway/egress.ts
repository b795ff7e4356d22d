/**
 * The forward proxy (DESIGN.md "Egress"): `CONNECT host:port` tunnels and absolute-URI requests
 * (`GET http://host/path`). Order of every exchange: parse the target, authenticate the token,
 * check the chain-wide allowlist by name, then resolve once and connect to that exact address.
 * No TLS interception: a tunnel's bytes are counted, never read. Every exchange, allowed or refused,
 * is recorded exactly once when it ends; a revoked session's `close` destroys both sides.
 */
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { request as httpRequest } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { CordonError, isCordonError } from '../errors.ts';
import { type EgressTarget, type Lookup, egressAllowed, parseAbsoluteTarget, parseConnectTarget, resolveDestination, systemLookup } from './egress-rules.ts';
import { endToEndHeaders, proxyToken, writeConnectRefusal, writeResponseRefusal } from './egress-wire.ts';
import type { GatewayPrincipal } from './principal.ts';

/** One tunnel or proxied request, as it ended. Bytes are counted on the upstream socket (headers included for absolute-URI requests). */
export interface EgressRecord {
  principal?: GatewayPrincipal;
  /** '' and 0 when the target could not be parsed (the raw text is never echoed: it may hold userinfo). */
  host: string;
  port: number;
  /** The one address connected to (or refused), when resolution got that far. */
  address?: string;
  decision: 'allow' | 'deny';
  /** Stable tag: egress_not_allowed, egress_port_not_allowed, refused_address, no_token, connect_timeout, session_closed, … */
  reason?: string;
  /** The refusal as told to the client (names the policy that refused); safe for an audit row. */
  description?: string;
  /** The HTTP status answered; 0 when the connection was closed before any answer. */
  status: number;
  /** Bytes from the destination towards the client. */
  bytesIn: number;
  /** Bytes from the client towards the destination. */
  bytesOut: number;
  durationMs: number;
}

export interface EgressDeps {
  /** Verifies a token as the gateway does everywhere; throws CordonError (invalid_token → 407). */
  authenticate(token: string): Promise<GatewayPrincipal>;
  /** Called exactly once per exchange when it ends; must not throw. */
  record(row: EgressRecord): void;
  /** The session's call budget (limits.ts); throws a 429 refusal past it. */
  admit?(principal: GatewayPrincipal): void;
  /** Registers an open exchange; the caller invokes `close` when the session is revoked. Returns the unregister function. */
  track(principal: GatewayPrincipal, close: () => void): () => void;
  now(): number;
  /** Deadline for resolving and connecting (504 past it). */
  connectTimeoutMs: number;
  /** Absolute-URI only: deadline for the upstream's response headers once the request is sent. Default 30 s. */
  responseTimeoutMs?: number;
  /** Absolute-URI only: request body cap in bytes (413 past it). Default 1 MiB. */
  maxBodyBytes?: number;
  lookup?: Lookup;
  /** Opens the TCP connection to a resolved address; tests replace it to simulate a destination that never answers. */
  connect?: (address: string, port: number) => Socket;
}

const DEFAULT_RESPONSE_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_BODY_BYTES = 1 << 20;
/** setTimeout's ceiling; a token living longer than ~24 days is closed by revocation alone. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The state of one exchange, so that every path out of it records once. */
class Exchange {
  readonly started: number;
  principal?: GatewayPrincipal;
  target?: EgressTarget;
  address?: string;
  upstream?: Socket;
  readonly aborted = new AbortController();
  #untrack?: () => void;
  #expiry?: NodeJS.Timeout;
  #done = false;

  constructor(private readonly deps: EgressDeps) {
    this.started = deps.now();
  }

  /** Registers the exchange with the session and the token's expiry; `destroy` tears down the client side. */
  watch(principal: GatewayPrincipal, destroy: () => void): void {
    const close = (reason: string, description: string): void => {
      if (this.aborted.signal.aborted) return;
      this.aborted.abort(new CordonError('access_denied', description, { reason }));
      this.upstream?.destroy();
      destroy();
    };
    this.#untrack = this.deps.track(principal, () => close('session_closed', 'the session was closed'));
    const left = principal.expiresAt - this.deps.now();
    if (left <= MAX_TIMER_MS) this.#expiry = setTimeout(() => close('token_expired', 'the token expired'), Math.max(0, left)).unref();
  }

  /** Why the exchange was cut by revocation or expiry, if it was. */
  get closedBy(): CordonError | undefined {
    const reason: unknown = this.aborted.signal.reason;
    return this.aborted.signal.aborted && isCordonError(reason) ? reason : undefined;
  }

  finish(decision: 'allow' | 'deny', status: number, reason?: string, description?: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#untrack?.();
    clearTimeout(this.#expiry);
    this.deps.record({
      principal: this.principal,
      host: this.target?.host ?? '',
      port: this.target?.port ?? 0,
      address: this.address,
      decision,
      reason: reason ?? this.closedBy?.reason,
      description: description ?? this.closedBy?.description,
      status,
      bytesIn: this.upstream?.bytesRead ?? 0,
      bytesOut: this.upstream?.bytesWritten ?? 0,
      durationMs: Math.max(0, this.deps.now() - this.started),
    });
  }
}

/** Authenticates and checks the allowlist; nothing is resolved for a token or destination that fails here. */
async function admit(deps: EgressDeps, x: Exchange, authorization: string | undefined, target: EgressTarget): Promise<GatewayPrincipal> {
  const principal = await deps.authenticate(proxyToken(authorization));
  if (principal.expiresAt <= deps.now()) throw new CordonError('invalid_token', 'the token has expired', { reason: 'token_expired' });
  x.principal = principal;
  egressAllowed(principal, target.host, target.port);
  deps.admit?.(principal);
  return principal;
}

/** Resolves once and connects to that address within the deadline; revocation or the deadline abandons the attempt. */
async function reach(deps: EgressDeps, x: Exchange, target: EgressTarget): Promise<Socket> {
  let timer: NodeJS.Timeout | undefined;
  const stop = new Promise<never>((_, reject) => {
    const timeout = new CordonError('bad_gateway', `no connection to ${target.host}:${target.port} within ${deps.connectTimeoutMs} ms`, {
      reason: 'connect_timeout',
      status: 504,
    });
    timer = setTimeout(() => reject(timeout), deps.connectTimeoutMs);
    const signal = x.aborted.signal;
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  stop.catch(() => undefined);
  try {
    x.address = await Promise.race([resolveDestination(target, deps.lookup ?? systemLookup), stop]);
    const socket = (deps.connect ?? connectTcp)(x.address, target.port);
    x.upstream = socket;
    socket.on('error', () => undefined); // each side's failure surfaces as its 'close'
    await Promise.race([once(socket, 'connect'), stop]);
    return socket;
  } catch (err) {
    x.upstream?.destroy();
    if (isCordonError(err)) throw err;
    throw new CordonError('bad_gateway', `could not connect to ${target.host}:${target.port}`, { reason: 'connect_failed', cause: err });
  } finally {
    clearTimeout(timer);
  }
}

const connectTcp = (address: string, port: number): Socket => netConnect({ host: address, port });

/** Resolves when a socket or response has closed (ServerResponse has `closed` at run time but not in its types). */
const closed = (s: Duplex | ServerResponse): Promise<void> => ((s as { closed?: boolean }).closed ? Promise.resolve() : once(s, 'close').then(() => undefined));

/** When one side is gone, the other flushes what it holds and closes, so a tunnel never outlives either end. */
function tieLifetimes(a: Socket | Duplex, b: Socket | Duplex): void {
  a.once('close', () => b.end(() => b.destroy()));
  b.once('close', () => a.end(() => a.destroy()));
}

/**
 * `CONNECT host:port`. Call from the node:http server's 'connect' event with its arguments.
 * Replies `200 Connection Established` and pipes both ways, or writes a JSON refusal and ends the socket.
 */
export async function handleConnect(deps: EgressDeps, req: IncomingMessage, clientSocket: Duplex, head: Buffer): Promise<void> {
  const x = new Exchange(deps);
  clientSocket.on('error', () => undefined);
  let upstream: Socket;
  try {
    x.target = parseConnectTarget(req.url);
    const principal = await admit(deps, x, req.headers['proxy-authorization'], x.target);
    x.watch(principal, () => clientSocket.destroy());
    upstream = await reach(deps, x, x.target);
  } catch (err) {
    if (x.closedBy) return x.finish('deny', 0);
    const { error, status } = writeConnectRefusal(clientSocket, err);
    return x.finish('deny', status, error.reason, error.description);
  }
  if (clientSocket.destroyed) {
    upstream.destroy();
    return x.finish('deny', 0, 'client_closed');
  }
  clientSocket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  if (head.length > 0) upstream.write(head);
  clientSocket.pipe(upstream);
  upstream.pipe(clientSocket);
  tieLifetimes(clientSocket, upstream);
  await Promise.all([closed(clientSocket), closed(upstream)]);
  x.finish('allow', 200);
}

/**
 * `GET http://host/path` and the like. Call from the server's 'request' event when `req.url` is an
 * absolute URI. Forwards to the resolved address with Host set to the URI's authority, without
 * Proxy-Authorization or hop-by-hop headers, caps the request body, and streams the response back.
 */
export async function handleAbsoluteUri(deps: EgressDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const x = new Exchange(deps);
  const maxBody = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  let url: URL;
  let upstream: Socket;
  try {
    const parsed = parseAbsoluteTarget(req.url);
    x.target = parsed.target;
    url = parsed.url;
    const principal = await admit(deps, x, req.headers['proxy-authorization'], x.target);
    if (req.headers.upgrade !== undefined) throw new CordonError('invalid_request', 'upgrades are not proxied', { reason: 'upgrade_refused' });
    if (Number(req.headers['content-length'] ?? 0) > maxBody)
      throw new CordonError('invalid_request', `the request body exceeds ${maxBody} bytes`, { reason: 'body_too_large', status: 413 });
    x.watch(principal, () => res.destroy());
    upstream = await reach(deps, x, x.target);
  } catch (err) {
    if (x.closedBy) return x.finish('deny', 0);
    const { error, status } = writeResponseRefusal(res, err);
    return x.finish('deny', status, error.reason, error.description);
  }
  await forward(deps, x, req, res, url, upstream, maxBody);
}

/** Sends the request over the connected socket and streams the answer; records when the client's response closes. */
async function forward(deps: EgressDeps, x: Exchange, req: IncomingMessage, res: ServerResponse, url: URL, socket: Socket, maxBody: number): Promise<void> {
  const headers = endToEndHeaders(req.headers);
  headers.host = url.host;
  // A chunked body must stay chunked: without the header Node would send a GET's body unframed.
  if (req.headers['transfer-encoding'] !== undefined) headers['transfer-encoding'] = 'chunked';
  const outgoing = httpRequest({ method: req.method, path: `${url.pathname}${url.search}`, headers, createConnection: () => socket });
  let failure: { status: number; reason: string; description: string } | undefined;
  /** Why a response whose headers were already sent did not finish. */
  let cutShort: string | undefined;
  const fail = (err: unknown): void => {
    if (failure) return;
    const { error, status } = writeResponseRefusal(res, err);
    failure = { status, reason: x.closedBy?.reason ?? error.reason, description: x.closedBy?.description ?? error.description };
    outgoing.destroy();
    socket.destroy();
  };
  const responseTimer = setTimeout(
    () => fail(new CordonError('bad_gateway', `${x.target?.host} sent no response in time`, { reason: 'response_timeout', status: 504 })),
    deps.responseTimeoutMs ?? DEFAULT_RESPONSE_TIMEOUT_MS,
  );
  outgoing.on('error', (err) => fail(x.closedBy ?? new CordonError('bad_gateway', `${x.target?.host} failed`, { reason: 'upstream_failed', cause: err })));
  outgoing.on('response', (answer) => {
    clearTimeout(responseTimer);
    if (failure) return answer.destroy();
    res.writeHead(answer.statusCode ?? 502, endToEndHeaders(answer.headers));
    answer.pipe(res);
    answer.on('error', () => {
      cutShort = 'upstream_reset';
      res.destroy();
    });
  });

  let received = 0;
  req.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received > maxBody)
      return fail(new CordonError('invalid_request', `the request body exceeds ${maxBody} bytes`, { reason: 'body_too_large', status: 413 }));
    if (!failure && !outgoing.write(chunk)) {
      req.pause();
      outgoing.once('drain', () => req.resume());
    }
  });
  req.on('end', () => {
    if (!failure) outgoing.end();
  });

  await closed(res);
  clearTimeout(responseTimer);
  outgoing.destroy();
  socket.destroy();
  if (failure) return x.finish('deny', failure.status, failure.reason, failure.description);
  x.finish('allow', res.statusCode, res.writableFinished ? undefined : (x.closedBy?.reason ?? cutShort ?? 'client_closed'));
}
