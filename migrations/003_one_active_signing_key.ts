import type { Knex } from 'knex';

/**
 * At most one active signing key, enforced by the database: brokers and CLI commands starting
 * at once on a fresh database each found no key and each created one. Older duplicates left by
 * that race are retired here (still published for a day, so their tokens keep verifying).
 */
export async function up(knex: Knex): Promise<void> {
  const active = await knex('signing_keys').where({ status: 'active' }).orderBy('created_at', 'desc').orderBy('kid');
  const now = Date.now();
  for (const k of active.slice(1)) {
    await knex('signing_keys')
      .where({ kid: k.kid })
      .update({ status: 'retired', retired_at: now, publish_until: now + 24 * 3600_000 });
  }
  await knex.raw("CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (status) WHERE status = 'active'");
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX signing_keys_one_active');
}
