import { chmodSync, closeSync, mkdirSync, openSync, statSync } from 'node:fs';
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
    if (filename !== ':memory:') makePrivate(filename);
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
          conn.exec('PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;', (err) => done(err, conn));
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

/**
 * The database holds session, token and audit rows: readable by the broker's user only, whatever
 * the umask. The file is made here (mode 0600) before SQLite opens it, because SQLite would make
 * it 0644 under the usual umask; SQLite then gives the -wal and -shm files the main file's mode.
 * Existing files with a looser mode are tightened (a file owned by another user is left for
 * `cordon status` to report). A directory that already exists is not changed: it may be shared.
 */
function makePrivate(filename: string): void {
  mkdirSync(dirname(filename), { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(filename, 'wx', 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  for (const f of filesOf(filename).slice(1)) {
    try {
      if ((statSync(f.path).mode & 0o777 & ~f.expected) !== 0) chmodSync(f.path, f.expected);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EPERM') throw e;
    }
  }
}

/**
 * An SQLite database's files and the widest mode each should have: its directory 0700, the
 * database and its -wal and -shm 0600. None for PostgreSQL or an in-memory database.
 */
export function sqliteFiles(databaseUrl: string): Array<{ path: string; expected: number }> {
  if (!databaseUrl.startsWith('sqlite:')) return [];
  const file = sqlitePath(databaseUrl);
  return file === ':memory:' ? [] : filesOf(file);
}

const filesOf = (file: string): Array<{ path: string; expected: number }> => [
  { path: dirname(file), expected: 0o700 },
  ...[file, `${file}-wal`, `${file}-shm`].map((path) => ({ path, expected: 0o600 })),
];

export function sqlitePath(databaseUrl: string): string {
  const rest = databaseUrl.replace(/^sqlite:(\/\/)?/, '');
  return rest === ':memory:' ? rest : resolve(rest);
}

/** Is the database answering? (readiness) */
export async function ping(db: Db): Promise<void> {
  await db.raw('select 1');
}

/**
 * Brings the schema up to date; returns the migrations it applied. This is the first thing that
 * touches the database, so a failure here says which setting to look at.
 */
export async function migrate(db: Db): Promise<string[]> {
  try {
    return await underMigrationLock(db, async () => {
      await prepareMigrationTables(db);
      const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
      return applied;
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = driverMessage(e);
    throw new Error(`cannot open the database named by DATABASE_URL: ${why}${code && !why.includes(code) ? ` (${code})` : ''}`, { cause: e });
  }
}

/** Any 64-bit number the Cordon processes on one PostgreSQL database agree on. */
const MIGRATION_ADVISORY_LOCK = 0x636f72646f6e; // "cordon"
const MIGRATION_WAIT_MS = 60_000;

/**
 * Replicas (and CLI commands) starting together on a fresh database must not migrate at once:
 * knex creates its own bookkeeping tables without a lock, so racers fail on "already exists" and
 * can leave two rows in knex_migrations_lock, after which knex refuses to migrate at all.
 * PostgreSQL: a transaction-scoped advisory lock held (on one pooled connection) while the
 * migrations run on others. SQLite has no such lock: the bookkeeping tables are made race-free
 * (prepareMigrationTables), knex's own lock row then serialises the runs, and a process that
 * finds it taken (or the file busy) waits and tries again; the migrations then find nothing to do.
 */
async function underMigrationLock<T>(db: Db, fn: () => Promise<T>): Promise<T> {
  if (isPostgres(db)) {
    let out: T;
    await db.transaction(async (tx) => {
      // Waiting for another process's migrations is bounded like on SQLite (advisory locks obey lock_timeout).
      await tx.raw(`SET LOCAL lock_timeout = '${MIGRATION_WAIT_MS}ms'`);
      await tx.raw('SELECT pg_advisory_xact_lock(?)', [MIGRATION_ADVISORY_LOCK]);
      out = await fn();
    });
    return out!;
  }
  const giveUpAt = Date.now() + MIGRATION_WAIT_MS;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      const taken = (e as Error)?.name === 'MigrationLocked' || /Migration table is already locked/.test(String((e as Error)?.message));
      if ((!taken && !isTransient(e)) || Date.now() > giveUpAt) throw e;
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
  }
}

/**
 * knex's bookkeeping tables, made idempotently and with exactly one lock row (knex inserts one
 * per racer; with two, it never migrates again — this also repairs a database left that way).
 * Same columns as knex makes. On PostgreSQL this runs under the advisory lock; on SQLite in one
 * write transaction, so the lock row cannot change under it (knex holds it only inside its own
 * write transaction).
 */
async function prepareMigrationTables(db: Db): Promise<void> {
  if (isPostgres(db)) {
    await db.raw('CREATE TABLE IF NOT EXISTS knex_migrations (id serial PRIMARY KEY, name varchar(255), batch integer, migration_time timestamptz)');
    await db.raw('CREATE TABLE IF NOT EXISTS knex_migrations_lock (index serial PRIMARY KEY, is_locked integer)');
  } else {
    await db.raw(
      'CREATE TABLE IF NOT EXISTS `knex_migrations` (`id` integer not null primary key autoincrement, `name` varchar(255), `batch` integer, `migration_time` datetime)',
    );
    await db.raw('CREATE TABLE IF NOT EXISTS `knex_migrations_lock` (`index` integer not null primary key autoincrement, `is_locked` integer)');
  }
  // A busy SQLite file fails this at once; underMigrationLock tries again.
  await db.transaction(async (tx) => {
    await tx.raw('UPDATE knex_migrations_lock SET is_locked = is_locked WHERE 1 = 0'); // the write lock first, then read
    const rows = await tx('knex_migrations_lock').select('index', 'is_locked');
    if (rows.length === 1) return;
    await tx('knex_migrations_lock').del();
    await tx('knex_migrations_lock').insert({ is_locked: 0 });
  });
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

/** Runs `fn` again (with its attempt number) on a busy SQLite file or a PostgreSQL deadlock or serialization failure. */
export async function retryTransient<T>(fn: (attempt: number) => Promise<T>, attempts = 6): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (attempt >= attempts || !isTransient(e)) throw e;
      await new Promise((r) => setTimeout(r, 2 ** attempt + Math.random() * 10));
    }
  }
}

/**
 * A transaction retried a few times on transient conflicts. SQLite upgrades a read snapshot to a
 * write lazily and fails at once when another connection (say the CLI) wrote in between; PostgreSQL
 * picks a deadlock victim. `fn` must only touch the database, so running it again is safe.
 */
export function transact<T>(db: Db, fn: (tx: Knex.Transaction) => Promise<T>, attempts = 6): Promise<T> {
  return retryTransient((attempt) => {
    if (attempt === 1 || isPostgres(db)) return db.transaction(fn);
    // Retrying on SQLite: take the write lock first (a write that touches nothing), so the
    // busy timeout waits for the other writer instead of failing on a stale read snapshot.
    return db.transaction(async (tx) => {
      await tx.raw('UPDATE replay_guard SET expires_at = expires_at WHERE 0');
      return fn(tx);
    });
  }, attempts);
}
