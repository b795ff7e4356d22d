import type { Knex } from 'knex';

/**
 * IAM revocations as entries of one consolidated inline policy per role (`cordon-revocations`),
 * rebuilt in full from these rows on every change. One row per denied thing:
 * - kind `session`: `subject` is the session's aws:SourceIdentity; `revoked_at` bounds
 *   aws:TokenIssueTime (plus clock skew).
 * - kind `credential`: `subject` is the aws:userid pattern (`AROA*:<role session name>`) of one
 *   credential revoked inside a live session.
 * Rows written before this migration have `kind` null: each names its own inline policy
 * (`cordon-revoke-<id>`), which the sweeper still deletes as before once it is due.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('iam_denies', (t) => {
    t.string('kind', 16).nullable(); // session | credential (null: a legacy per-revocation policy)
    t.string('subject', 256).nullable(); // source identity, or aws:userid pattern
    t.bigInteger('revoked_at').nullable();
    t.index(['role_arn', 'removed_at'], 'iam_denies_role_active');
    t.index(['sid'], 'iam_denies_sid');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('iam_denies', (t) => {
    t.dropIndex(['sid'], 'iam_denies_sid');
    t.dropIndex(['role_arn', 'removed_at'], 'iam_denies_role_active');
    t.dropColumn('revoked_at');
    t.dropColumn('subject');
    t.dropColumn('kind');
  });
}
