import type { Knex } from 'knex';

/**
 * The whole schema of the broker. Times are epoch milliseconds (bigint) so SQLite and
 * PostgreSQL compare them the same way; JSON is stored as text for the same reason.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('agents', (t) => {
    t.string('id', 64).primary(); // the OAuth client_id
    t.string('name', 128).notNullable().unique();
    t.string('policy', 64).notNullable();
    t.string('auth_method', 32).notNullable();
    t.string('secret_hash', 128).nullable(); // HMAC-SHA256 of the client secret, keyed by the broker
    t.text('jwks').nullable(); // public JWKS for private_key_jwt
    t.string('status', 16).notNullable(); // active | disabled | revoked
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });

  await knex.schema.createTable('sessions', (t) => {
    t.string('sid', 64).primary();
    t.string('agent_id', 64).notNullable().references('id').inTable('agents');
    t.string('task', 200).nullable();
    t.text('scope').notNullable();
    t.text('audience').notNullable(); // JSON array
    t.string('origin', 32).notNullable(); // client_credentials | bootstrap | federation
    t.string('subject', 256).notNullable(); // the principal the chain acts for
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('revoked_at').nullable();
    t.string('revoke_reason', 200).nullable();
    t.bigInteger('swept_at').nullable(); // backend credentials cleaned up after expiry/revocation
    t.index(['agent_id']);
    t.index(['expires_at']);
  });

  await knex.schema.createTable('tokens', (t) => {
    t.string('jti', 64).primary();
    t.string('sid', 64).notNullable().references('sid').inTable('sessions');
    t.string('client_id', 64).notNullable(); // holder
    t.string('parent_jti', 64).nullable();
    t.text('scope').notNullable();
    t.text('audience').notNullable(); // JSON array
    t.integer('depth').notNullable();
    t.text('act').nullable(); // JSON actor chain
    t.string('cnf_jkt', 64).nullable();
    t.string('kid', 64).notNullable();
    t.bigInteger('issued_at').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('revoked_at').nullable();
    t.index(['sid']);
    t.index(['parent_jti']);
    t.index(['client_id']);
  });

  // Append-only feed for offline verifiers; the cursor is seq.
  await knex.schema.createTable('revocations', (t) => {
    t.increments('seq').primary();
    t.string('kind', 8).notNullable(); // jti | sid | agent
    t.string('value', 64).notNullable();
    t.bigInteger('expires_at').notNullable(); // when the revoked thing would have died anyway
    t.bigInteger('revoked_at').notNullable();
    t.index(['kind', 'value']);
  });

  await knex.schema.createTable('audit', (t) => {
    t.bigInteger('seq').primary();
    t.bigInteger('at').notNullable();
    t.string('event', 48).notNullable();
    t.string('decision', 8).notNullable(); // allow | deny | info
    t.string('agent_id', 64).nullable();
    t.string('sid', 64).nullable();
    t.string('jti', 64).nullable();
    t.text('chain').nullable(); // JSON array of client_ids, root first
    t.string('reason', 500).nullable();
    t.text('params').notNullable(); // JSON, secrets never
    t.string('prev_hash', 64).notNullable();
    t.string('hash', 64).notNullable();
  });

  await knex.schema.createTable('signing_keys', (t) => {
    t.string('kid', 64).primary();
    t.string('alg', 16).notNullable();
    t.text('public_jwk').notNullable();
    t.string('status', 16).notNullable(); // active | retired
    t.bigInteger('created_at').notNullable();
    t.bigInteger('retired_at').nullable();
    t.bigInteger('publish_until').nullable(); // retired keys stay in /jwks until their last token expires
  });

  await knex.schema.createTable('bootstrap_tokens', (t) => {
    t.string('id', 64).primary();
    t.string('agent_id', 64).notNullable().references('id').inTable('agents');
    t.string('token_hash', 64).notNullable().unique();
    t.text('scope').nullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('used_at').nullable();
    t.string('used_sid', 64).nullable();
  });

  // DPoP proof jtis and other one-time values, kept until they could no longer be accepted.
  await knex.schema.createTable('replay_guard', (t) => {
    t.string('key', 128).primary();
    t.bigInteger('expires_at').notNullable();
    t.index(['expires_at']);
  });

  await knex.schema.createTable('credentials', (t) => {
    t.string('id', 64).primary();
    t.string('sid', 64).notNullable().references('sid').inTable('sessions');
    t.string('jti', 64).notNullable();
    t.string('agent_id', 64).notNullable();
    t.string('name', 64).notNullable();
    t.string('provider', 16).notNullable();
    t.text('handle').nullable(); // JSON revocation handle (accessor, lease id, source identity) — never the secret
    t.string('state', 16).notNullable(); // pending | issued | revoked | revoke_failed | failed
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('revoked_at').nullable();
    t.string('note', 500).nullable();
    t.index(['sid']);
    t.index(['state']);
  });

  // Deny statements the broker put on IAM roles, removed by the sweeper after the denied credentials expire.
  await knex.schema.createTable('iam_denies', (t) => {
    t.string('id', 64).primary();
    t.string('role_arn', 256).notNullable();
    t.string('policy_name', 128).notNullable();
    t.string('sid', 64).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('remove_after').notNullable();
    t.bigInteger('removed_at').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const t of ['iam_denies', 'credentials', 'replay_guard', 'bootstrap_tokens', 'signing_keys', 'audit', 'revocations', 'tokens', 'sessions', 'agents']) {
    await knex.schema.dropTableIfExists(t);
  }
}
