import { createServer, type Server } from 'node:http';
import type { Broker } from '../broker.ts';
import { createApp, type AppExtensions } from './app.ts';

export interface RunningServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Listens on the configured host and port (port 0 picks a free one, for tests). */
export async function listen(b: Broker, ext: AppExtensions = {}, port = b.config.port, host = b.config.host): Promise<RunningServer> {
  const app = await createApp(b, ext);
  // Not app.listen: Express 5 calls its callback on errors too, so a port in use would look like success.
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      reject(new Error(`cannot listen on ${host}:${port}: ${e.code === 'EADDRINUSE' ? 'the port is in use' : e.code === 'EADDRNOTAVAIL' ? 'the address is not on this machine' : e.message} (PORT, HOST)`));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
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
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
