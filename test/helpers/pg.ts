import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';
import { PG_URL } from './broker.ts';

/** A connection to the server's maintenance database, failing fast when the server is not there. */
const pgAdmin = () => knexFactory({ client: 'pg', connection: PG_URL, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 5000 });

/** A fresh database on the local server, dropped afterwards. */
export async function freshPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `cordon_test_${randomBytes(6).toString('hex')}`;
  const admin = pgAdmin();
  try {
    await admin.raw(`CREATE DATABASE ${name}`);
  } catch (e) {
    throw new Error(`PostgreSQL at ${PG_URL} does not answer or refuses CREATE DATABASE (${(e as Error).message}); the store suite needs it (CORDON_TEST_PG points elsewhere)`);
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

