/**
 * PostgreSQL only: one dedicated connection (outside the pool, which would hand it to queries)
 * LISTENing on the channel every revoking transaction notifies at commit (revocations.add), so
 * each replica hears of a revocation committed anywhere within milliseconds. The connection is
 * re-opened after any error with a growing pause; `onState` says when it is listening and when
 * not, so the caller answers from memory only while it hears.
 */
import { type Db, isPostgres } from './db.ts';

export const REVOCATION_CHANNEL = 'cordon_revocations';

export interface RevocationListener {
  close(): Promise<void>;
}

interface PgClient {
  query(sql: string): Promise<unknown>;
  on(event: 'notification', f: (m: { channel: string }) => void): void;
  on(event: 'error' | 'end', f: (e?: Error) => void): void;
  removeAllListeners(): void;
}

const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;

/** Undefined on SQLite (there is nothing to listen to: other processes are polled). */
export function listenForRevocations(db: Db, handlers: { onNotify(): void; onState(listening: boolean, err?: Error): void }): RevocationListener | undefined {
  if (!isPostgres(db)) return undefined;
  let closed = false;
  let client: PgClient | undefined;
  let retryMs = RETRY_MIN_MS;
  let timer: NodeJS.Timeout | undefined;
  let connecting: Promise<void> | undefined;

  const drop = async (c: PgClient): Promise<void> => {
    c.removeAllListeners();
    // A broken connection may refuse to end cleanly; it is gone either way.
    c.on('error', () => {});
    await db.client.destroyRawConnection(c).catch(() => {});
  };

  const lost = (c: PgClient, err?: Error): void => {
    if (client !== c) return;
    client = undefined;
    handlers.onState(false, err ?? new Error('the listening connection ended'));
    void drop(c);
    schedule();
  };

  const schedule = (): void => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      connecting = connect();
    }, retryMs);
    timer.unref();
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  };

  const connect = async (): Promise<void> => {
    let c: PgClient | undefined;
    try {
      c = (await db.client.acquireRawConnection()) as PgClient;
      const mine = c;
      mine.on('error', (e) => lost(mine, e));
      mine.on('end', () => lost(mine));
      mine.on('notification', (m) => {
        if (m.channel === REVOCATION_CHANNEL) handlers.onNotify();
      });
      await mine.query(`LISTEN ${REVOCATION_CHANNEL}`);
      if (closed) return void (await drop(mine));
      client = mine;
      retryMs = RETRY_MIN_MS;
      handlers.onState(true);
    } catch (e) {
      if (c) await drop(c);
      if (closed) return;
      handlers.onState(false, e as Error);
      schedule();
    }
  };

  connecting = connect();
  return {
    async close() {
      closed = true;
      clearTimeout(timer);
      await connecting;
      const c = client;
      client = undefined;
      if (c) await drop(c);
    },
  };
}
