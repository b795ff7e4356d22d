import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Broker } from '../broker.ts';
import { createApp, type AppExtensions } from './app.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { recordRefusal } from '../audit/refusals.ts';
import { Attempt } from '../audit/attempt.ts';
import { CordonError } from '../errors.ts';
import { responseStarted } from './internals.ts';

export interface RunningServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Listens on the configured host and port (port 0 picks a free one, for tests). */
export async function listen(b: Broker, ext: AppExtensions = {}, port = b.config.port, host = b.config.host): Promise<RunningServer> {
  const app = await createApp(b, ext);
  // Introspection and /credentials answer liveness from the broker's cache while it is current.
  await b.live.start();
  // Not app.listen: Express 5 calls its callback on errors too, so a port in use would look like success.
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      reject(
        new Error(
          `cannot listen on ${host}:${port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.code === 'EADDRNOTAVAIL' ? 'the address is not on this machine' : e.message} (PORT, HOST)`,
        ),
      );
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  }).catch(async (e: unknown) => {
    await b.live.stop();
    throw e;
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => void answerClientError(b, err, socket));
  server.keepAliveTimeout = 65_000;
  // A request (headers and body) must arrive within 30 s: a client trickling a body cannot hold a
  // connection for Node's default five minutes.
  server.requestTimeout = 30_000;
  server.headersTimeout = 20_000;
  const addr = server.address();
  const url = typeof addr === 'object' && addr ? `http://${host}:${addr.port}` : `http://${host}:${port}`;
  return {
    server,
    url,
    // Refusals counted but not yet written (the limiter's open windows) are written before the database closes.
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      })
        .then(() => b.refusals.close())
        .then(() => b.live.stop()),
  };
}

/** What Node's HTTP parser refuses before any route sees the request, as status, reason phrase and description. */
function clientErrorReply(code: string | undefined): [number, string, string] {
  if (code === 'HPE_HEADER_OVERFLOW') return [431, 'Request Header Fields Too Large', 'request headers are too large'];
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return [408, 'Request Timeout', 'the request did not arrive in time'];
  return [400, 'Bad Request', 'the request is not valid HTTP/1.1'];
}

/**
 * Requests Node's parser refuses (oversized headers, malformed HTTP, a request that never finished)
 * get RFC 6749 JSON like every other refusal, where Node would answer with a bare status line, and
 * are audited like every other refusal (they name nobody, so they count against the address).
 * As Node itself does, nothing is written once a response on that connection has begun.
 */
export async function answerClientError(b: Broker, err: NodeJS.ErrnoException, socket: Duplex): Promise<void> {
  if (err.code === 'ECONNRESET' || !socket.writable || responseStarted(socket)) {
    socket.destroy();
    return;
  }
  const [status, phrase, description] = clientErrorReply(err.code);
  const clientAddress = clientAddressOf((socket as Duplex & { remoteAddress?: string }).remoteAddress);
  const body = JSON.stringify({ error: 'invalid_request', error_description: description });
  socket.end(
    `HTTP/1.1 ${status} ${phrase}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
  );
  // Answered first: the client may already have half-closed the connection, which would not wait for the row.
  const refusal = new CordonError('invalid_request', description, {
    status,
    reason: err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request_timeout' : 'http_malformed',
  });
  await recordRefusal(b, new Attempt('request', clientAddress).note({ status }), refusal).catch((e: Error) =>
    b.log.error({ err: e.message }, 'could not audit a refusal'),
  );
}
