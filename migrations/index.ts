import type { Knex } from 'knex';
import * as core from './001_core.ts';
import * as iamDenyEntries from './002_iam_deny_entries.ts';
import * as oneActiveSigningKey from './003_one_active_signing_key.ts';
import * as mcpToolPins from './004_mcp_tool_pins.ts';

/** Migrations are listed here rather than globbed, so they load the same under tsx, tsc and bundlers. */
const migrations: Array<[string, Knex.Migration]> = [
  ['001_core', core],
  ['002_iam_deny_entries', iamDenyEntries],
  ['003_one_active_signing_key', oneActiveSigningKey],
  ['004_mcp_tool_pins', mcpToolPins],
];

export const migrationSource: Knex.MigrationSource<[string, Knex.Migration]> = {
  getMigrations: async () => migrations,
  getMigrationName: ([name]) => name,
  getMigration: async ([, m]) => m,
};
