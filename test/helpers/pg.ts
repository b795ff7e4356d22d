import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import knexFactory from 'knex';
import { PG_URL } from './broker.ts';

/** A connection to the server's maintenance database, failing fast when the server is not there. */
const pgAdmin = () => knexFactory({ client: 'pg', connection: PG_URL, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 5000 });

/** A fresh database on the local server, dropped afterwards. */
export async function freshPgDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `cordon_test_${randomBytes(6).toString('hex')}`;
  const admin = pgAdmin();
  try {
    await admin.raw(`CREATE DATABASE ${name}`);
  } catch (e) {
    throw new Error(
      `PostgreSQL at ${PG_URL} does not answer or refuses CREATE DATABASE (${(e as Error).message}); the store suite needs it (CORDON_TEST_PG points elsewhere)`,
      { cause: e },
    );
  } finally {
    await admin.destroy();
  }
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    async drop() {
      const a = pgAdmin();
      try {
        await a.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.destroy();
      }
    },
  };
}

/** A test broker (no HTTP) on a fresh PostgreSQL database with the shipped policies; `close` drops the database too. */
export async function startPgTestBroker(): Promise<{ tb: import('./broker.ts').TestBroker; close(): Promise<void> }> {
  const { startTestBroker } = await import('./broker.ts');
  const db = await freshPgDatabase();
  try {
    const tb = await startTestBroker({ http: false, policyDir: resolve('policies'), databaseUrl: db.url });
    return {
      tb,
      async close() {
        await tb.close();
        await db.drop();
      },
    };
  } catch (e) {
    await db.drop();
    throw e;
  }
}
