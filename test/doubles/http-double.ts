/**
 * Shared plumbing for the protocol doubles: a real node:http server on
 * 127.0.0.1:0, request recording, an injectable clock, a delay knob.
 * Each double implements `handle()` and speaks its own wire format.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

/** A clock as a function or as the project's `Clock` ({ now(): number }). */
export type NowSource = (() => number) | { now(): number };

export const toNowFn = (src: NowSource | undefined): (() => number) =>
  src === undefined ? () => Date.now() : typeof src === 'function' ? src : () => src.now();

/** What every double records for every request it receives, before any failure injection. */
export interface RecordedRequestBase {
  /** Order of arrival, from 1. */
  seq: number;
  method: string;
  /** URL path as received, e.g. `/v1/auth/token/create` or `/`. */
  path: string;
  query: Record<string, string>;
  /** All request headers as node parsed them (lower-case names). Secrets included: these are test doubles. */
  headers: http.IncomingHttpHeaders;
  rawBody: string;
  /** The body's bytes (rawBody is their UTF-8 reading). */
  bodyBytes: Buffer;
  /** The double's clock (`now()`) when the request arrived. */
  at: number;
  /** HTTP status the double answered with (set when the response is written). */
  status?: number;
}

const B62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
export function rand62(n: number): string {
  const bytes = randomBytes(n);
  let s = '';
  for (const b of bytes) s += B62[b % 62];
  return s;
}
const UPPER_ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
export function randUpper(n: number): string {
  const bytes = randomBytes(n);
  let s = '';
  for (const b of bytes) s += UPPER_ALNUM[b % 32];
  return s;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Largest body a double accepts (Vault's default max_request_size is 32 MiB; keep the doubles smaller). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

export abstract class HttpDouble<R extends RecordedRequestBase> {
  /** Every request received, in order (including ones answered by failure injection). */
  requests: R[] = [];
  /** Delay every response by this many real milliseconds (a slow backend). */
  delayMs = 0;
  /** The double's clock in ms since the epoch; replace it to move time without sleeping. */
  now: () => number;

  #server: http.Server | undefined;
  #url: string | undefined;
  #seq = 0;

  protected constructor(now?: NowSource) {
    this.now = toNowFn(now);
  }

  /** Base URL once started, e.g. `http://127.0.0.1:41234`. */
  get url(): string {
    if (!this.#url) throw new Error(`${this.constructor.name} is not started`);
    return this.#url;
  }

  async start(): Promise<string> {
    if (this.#url) return this.#url;
    const server = http.createServer((req, res) => {
      this.#onRequest(req, res).catch((err: unknown) => {
        if (!res.headersSent) {
          res.statusCode = 500;
          res.end(String(err instanceof Error ? err.stack : err));
        } else res.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    this.#server = server;
    this.#url = `http://127.0.0.1:${port}`;
    return this.#url;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    this.#url = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** Forget recorded requests and reset the delay. Subclasses also clear their failure injection. */
  reset(): void {
    this.requests = [];
    this.delayMs = 0;
  }

  async #onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) {
        res.writeHead(413, { 'content-type': 'text/plain' }).end('request body too large');
        return;
      }
      chunks.push(chunk as Buffer);
    }
    const bodyBytes = Buffer.concat(chunks);
    const rawBody = bodyBytes.toString('utf8');
    const u = new URL(req.url ?? '/', 'http://double.invalid');
    const base: RecordedRequestBase = {
      seq: ++this.#seq,
      method: req.method ?? 'GET',
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      headers: req.headers,
      rawBody,
      bodyBytes,
      at: this.now(),
    };
    const record = this.record(base, req);
    this.requests.push(record);
    if (this.delayMs > 0) await sleep(this.delayMs);
    const origWriteHead = res.writeHead.bind(res) as (...args: unknown[]) => http.ServerResponse;
    (res as unknown as { writeHead: (...args: unknown[]) => http.ServerResponse }).writeHead = (...args: unknown[]) => {
      record.status = args[0] as number;
      return origWriteHead(...args);
    };
    await this.handle(record, req, res);
  }

  /** Build the recorded form of a request (parse the body the way the real service does). */
  protected abstract record(base: RecordedRequestBase, req: http.IncomingMessage): R;
  /** Answer one request. */
  protected abstract handle(rec: R, req: http.IncomingMessage, res: http.ServerResponse): Promise<void>;
}
