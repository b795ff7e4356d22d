import type { Knex } from 'knex';
import * as core from './001_core.ts';

/** Migrations are listed here rather than globbed, so they load the same under tsx, tsc and bundlers. */
const migrations: Array<[string, Knex.Migration]> = [['001_core', core]];

export const migrationSource: Knex.MigrationSource<[string, Knex.Migration]> = {
  getMigrations: async () => migrations,
  getMigrationName: ([name]) => name,
  getMigration: async ([, m]) => m,
};
