import type { Knex } from 'knex';

/**
 * Pinned MCP tool definitions, one row per upstream name and tool. `pinned_hash` is the SHA-256 of
 * the RFC 8785 canonical JSON of the definition (name, description, input schema) first seen or
 * pinned by an admin; `changed_hash` is set while the upstream offers a different definition, so
 * every replica hides and refuses the tool until it is pinned again. Definitions are kept so
 * `cordon mcp diff` can show what changed.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('mcp_tool_pins', (t) => {
    t.string('upstream', 64).notNullable();
    t.string('tool', 256).notNullable();
    t.string('pinned_hash', 64).notNullable();
    t.text('pinned_definition').notNullable(); // canonical JSON
    t.bigInteger('pinned_at').notNullable();
    t.string('pinned_by', 16).notNullable(); // first_seen | admin
    t.string('changed_hash', 64).nullable();
    t.text('changed_definition').nullable();
    t.bigInteger('changed_at').nullable();
    t.primary(['upstream', 'tool']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('mcp_tool_pins');
}
