import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { migrationSource } from '../../migrations/index.ts';

export type Db = Knex;
/** A repository call runs either on the pool or inside a caller's transaction. */
export type Q = Knex | Knex.Transaction;

export const isPostgres = (db: Q): boolean => (db.client.config.client as string) === 'pg';

/**
 * knex prints its own warnings and connection errors to the console (stack traces, on stdout).
 * Every error also reaches the caller, which reports it its own way, so the console copy is dropped.
 */
const quiet = { warn() {}, error() {}, deprecate() {}, debug() {} };

/** Opens the database named by DATABASE_URL: sqlite://path (embedded, WAL) or postgres://… */
export function openDb(databaseUrl: string): Db {
  if (databaseUrl.startsWith('sqlite:')) {
    const filename = sqlitePath(databaseUrl);
    if (filename !== ':memory:') mkdirSync(dirname(filename), { recursive: true });
    return knexFactory({
      client: 'sqlite3',
      connection: { filename },
      useNullAsDefault: true,
      log: quiet,
      // One connection: SQLite has one writer anyway, and it keeps transactions strictly serial.
      pool: {
        min: 1,
        max: 1,
        afterCreate(conn: { exec: (sql: string, cb: (err: Error | null) => void) => void }, done: (err: Error | null, c: unknown) => void) {
          conn.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;', (err) => done(err, conn));
        },
      },
    });
  }
  return knexFactory({ client: 'pg', connection: databaseUrl, pool: { min: 1, max: 10 }, log: quiet });
}

/**
 * Connections for reads outside transactions. SQLite in WAL mode lets readers run beside the
 * single writer, each on its own connection, so lookups (introspection, client authentication)
 * do not queue behind writes on the one write connection. Every read sees what has committed.
 * PostgreSQL's pool already does this; an in-memory SQLite database cannot be shared.
 */
export function openReadDb(databaseUrl: string, writer: Db, connections = 4): Db {
  if (!databaseUrl.startsWith('sqlite:') || sqlitePath(databaseUrl) === ':memory:') return writer;
  return knexFactory({
    client: 'sqlite3',
    connection: { filename: sqlitePath(databaseUrl) },
    useNullAsDefault: true,
    log: quiet,
    pool: {
      min: 1,
      max: connections,
      afterCreate(conn: { exec: (sql: string, cb: (err: Error | null) => void) => void }, done: (err: Error | null, c: unknown) => void) {
        conn.exec('PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;', (err) => done(err, conn));
      },
    },
  });
}

export function sqlitePath(databaseUrl: string): string {
  const rest = databaseUrl.replace(/^sqlite:(\/\/)?/, '');
  return rest === ':memory:' ? rest : resolve(rest);
}

/**
 * Brings the schema up to date; returns the migrations it applied. This is the first thing that
 * touches the database, so a failure here says which setting to look at.
 */
export async function migrate(db: Db): Promise<string[]> {
  try {
    const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
    return applied;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = driverMessage(e);
    throw new Error(`cannot open the database named by DATABASE_URL: ${why}${code && !why.includes(code) ? ` (${code})` : ''}`, { cause: e });
  }
}

/**
 * What the database driver said. knex puts the SQL (with its values) in front of the driver's
 * message; that part is dropped, so no statement or bound value reaches a person or a log.
 */
export function driverMessage(e: unknown): string {
  const m = String((e as Error)?.message ?? e);
  return m.includes(' - ') ? m.slice(m.lastIndexOf(' - ') + 3) : m;
}

/** bigint columns come back from pg as strings; everything that reads times goes through this. */
export const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
export const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** Errors that say "try the transaction again": a PostgreSQL deadlock or serialization failure, a busy SQLite file. */
export function isTransient(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return err?.code === '40P01' || err?.code === '40001' || err?.code === 'SQLITE_BUSY' || /SQLITE_BUSY|database is locked/.test(err?.message ?? '');
}

/**
 * A transaction retried a few times on transient conflicts. SQLite upgrades a read snapshot to a
 * write lazily and fails at once when another connection (say the CLI) wrote in between; PostgreSQL
 * picks a deadlock victim. `fn` must only touch the database, so running it again is safe.
 */
export async function transact<T>(db: Db, fn: (tx: Knex.Transaction) => Promise<T>, attempts = 6): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      if (attempt === 1 || isPostgres(db)) return await db.transaction(fn);
      // Retrying on SQLite: take the write lock first (a write that touches nothing), so the
      // busy timeout waits for the other writer instead of failing on a stale read snapshot.
      return await db.transaction(async (tx) => {
        await tx.raw('UPDATE replay_guard SET expires_at = expires_at WHERE 0');
        return fn(tx);
      });
    } catch (e) {
      if (attempt >= attempts || !isTransient(e)) throw e;
      await new Promise((r) => setTimeout(r, 2 ** attempt + Math.random() * 10));
    }
  }
}
