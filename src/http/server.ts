import type { Server } from 'node:http';
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
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, host, () => resolve(s));
    s.on('error', reject);
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
