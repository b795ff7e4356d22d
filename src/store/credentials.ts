import { type Q, num, numOrNull } from './db.ts';

/**
 * Backend credentials the broker issued (table `credentials`, migration 001; IAM denies are in iam-denies.ts).
 *
 * States: pending (intent written, backend called or about to be) → issued | failed;
 * issued → revoked | revoke_failed (→ revoked on a later retry). Every transition is a
 * conditional UPDATE on the current state, so two replicas (or the revocation hook and the
 * sweeper) never both act on one row: whoever's UPDATE changes the row owns the work.
 * `revoked_at` is when revocation was requested (for revoke_failed: the last attempt). An
 * issued row with `revoked_at` set is one the backend cannot revoke (STS without
 * revoke_via_iam): it is alive until `expires_at`. `handle` is JSON without secrets.
 */
export type CredentialState = 'pending' | 'issued' | 'revoked' | 'revoke_failed' | 'failed';

export interface CredentialRow {
  id: string;
  sid: string;
  jti: string;
  agentId: string;
  name: string;
  provider: string;
  handle: Record<string, any> | null;
  state: CredentialState;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
  note: string | null;
}

const fromRow = (r: Record<string, unknown>): CredentialRow => ({
  id: r.id as string,
  sid: r.sid as string,
  jti: r.jti as string,
  agentId: r.agent_id as string,
  name: r.name as string,
  provider: r.provider as string,
  handle: r.handle ? JSON.parse(r.handle as string) : null,
  state: r.state as CredentialState,
  createdAt: num(r.created_at),
  expiresAt: num(r.expires_at),
  revokedAt: numOrNull(r.revoked_at),
  note: (r.note as string | null) ?? null,
});

const CHUNK = 400;
const clip = (s: string | null | undefined): string | null => (s == null ? null : s.length > 500 ? `${s.slice(0, 499)}…` : s);

/** A credential's intent, written before its backend is called: a row before its state. */
export type PendingCredential = Pick<CredentialRow, 'id' | 'sid' | 'jti' | 'agentId' | 'name' | 'provider' | 'createdAt' | 'expiresAt'> & {
  handle?: Record<string, unknown> | null;
};

/** Issued, not yet revoked credentials whose `column` is one of `values` (chunked IN lists). */
async function revocableBy(q: Q, column: 'sid' | 'jti', values: string[]): Promise<CredentialRow[]> {
  const out: CredentialRow[] = [];
  for (let i = 0; i < values.length; i += CHUNK) {
    const rows = await q('credentials')
      .whereIn(column, values.slice(i, i + CHUNK))
      .andWhere({ state: 'issued' })
      .whereNull('revoked_at');
    out.push(...rows.map(fromRow));
  }
  return out;
}

export const credentials = {
  /**
   * Credentials not yet expired, by what is known of them: `live` (issued, never revoked),
   * `revocation_unenforced` (revocation recorded, but the backend — STS without revoke_via_iam —
   * cannot kill it) and `revoke_failed` (not yet confirmed dead; the sweeper retries).
   */
  async unexpired(q: Q, now: number, which: 'live' | 'revocation_unenforced' | 'revoke_failed'): Promise<CredentialRow[]> {
    let b = q('credentials').where('expires_at', '>', now);
    if (which === 'live') b = b.where({ state: 'issued' }).whereNull('revoked_at');
    else if (which === 'revocation_unenforced') b = b.where({ state: 'issued' }).whereNotNull('revoked_at');
    else b = b.where({ state: 'revoke_failed' });
    return (await b.orderBy('sid').orderBy('expires_at')).map(fromRow);
  },
  async insertPending(q: Q, c: PendingCredential): Promise<void> {
    await q('credentials').insert({
      id: c.id,
      sid: c.sid,
      jti: c.jti,
      agent_id: c.agentId,
      name: c.name,
      provider: c.provider,
      handle: c.handle ? JSON.stringify(c.handle) : null,
      state: 'pending',
      created_at: c.createdAt,
      expires_at: c.expiresAt,
      revoked_at: null,
      note: null,
    });
  },

  /** A pending intent whose backend cleanup failed: revoke_failed, retried by the sweeper. */
  async markRevokeFailed(q: Q, id: string, at: number, note: string): Promise<boolean> {
    return (
      (await q('credentials')
        .where({ id, state: 'pending' })
        .update({ state: 'revoke_failed', revoked_at: at, note: clip(note) })) > 0
    );
  },

  async get(q: Q, id: string): Promise<CredentialRow | undefined> {
    const r = await q('credentials').where({ id }).first();
    return r ? fromRow(r) : undefined;
  },

  /** The intent learns what to revoke before the backend creates anything an agent could hold. */
  async checkpoint(q: Q, id: string, handle: Record<string, unknown>): Promise<boolean> {
    return (
      (await q('credentials')
        .where({ id, state: 'pending' })
        .update({ handle: JSON.stringify(handle) })) > 0
    );
  },

  async markIssued(q: Q, id: string, v: { handle: Record<string, unknown>; expiresAt: number }): Promise<boolean> {
    return (
      (await q('credentials')
        .where({ id, state: 'pending' })
        .update({ state: 'issued', handle: JSON.stringify(v.handle), expires_at: v.expiresAt })) > 0
    );
  },

  async markFailed(q: Q, id: string, note: string): Promise<boolean> {
    return (
      (await q('credentials')
        .where({ id, state: 'pending' })
        .update({ state: 'failed', note: clip(note) })) > 0
    );
  },

  /** Claims an issued, not yet revoked row for revocation (issued → revoke_failed until the backend confirms). */
  async claimIssued(q: Q, id: string, at: number, note: string): Promise<boolean> {
    return (
      (await q('credentials')
        .where({ id, state: 'issued' })
        .whereNull('revoked_at')
        .update({ state: 'revoke_failed', revoked_at: at, note: clip(note) })) > 0
    );
  },

  /** Claims an orphaned intent (pending older than the grace period). */
  async claimPending(q: Q, id: string, at: number, createdBefore: number, note: string): Promise<boolean> {
    return (
      (await q('credentials')
        .where({ id, state: 'pending' })
        .andWhere('created_at', '<', createdBefore)
        .update({ state: 'revoke_failed', revoked_at: at, note: clip(note) })) > 0
    );
  },

  /** Claims a failed revocation for another attempt (at most one attempt per `attemptedBefore` window). */
  async claimRetry(q: Q, id: string, at: number, attemptedBefore: number): Promise<boolean> {
    return (await q('credentials').where({ id, state: 'revoke_failed' }).andWhere('revoked_at', '<', attemptedBefore).update({ revoked_at: at })) > 0;
  },

  /** Final state after a revocation attempt on a claimed row. */
  async finish(q: Q, id: string, v: { state: CredentialState; at: number | null; note: string }): Promise<void> {
    await q('credentials')
      .where({ id })
      .update({ state: v.state, revoked_at: v.at, note: clip(v.note) });
  },

  /** Issued, not yet revoked credentials of these sessions. */
  revocableBySids: (q: Q, sids: string[]): Promise<CredentialRow[]> => revocableBy(q, 'sid', sids),

  /** Issued, not yet revoked credentials issued to these tokens. */
  revocableByJtis: (q: Q, jtis: string[]): Promise<CredentialRow[]> => revocableBy(q, 'jti', jtis),

  /**
   * Issued, not yet revoked, unexpired credentials whose token has been revoked: what the
   * after-commit revocation hook should have taken and did not (it failed, or the broker stopped
   * between the commit and the hook).
   */
  async ofRevokedTokens(q: Q, now: number, limit = 200): Promise<CredentialRow[]> {
    const rows = await q('credentials as c')
      .join('tokens as t', 't.jti', 'c.jti')
      .where('c.state', 'issued')
      .whereNull('c.revoked_at')
      .andWhere('c.expires_at', '>', now)
      .whereNotNull('t.revoked_at')
      .select('c.*')
      .orderBy('c.created_at')
      .limit(limit);
    return rows.map(fromRow);
  },

  async orphans(q: Q, createdBefore: number, limit = 200): Promise<CredentialRow[]> {
    return (await q('credentials').where({ state: 'pending' }).andWhere('created_at', '<', createdBefore).orderBy('created_at').limit(limit)).map(fromRow);
  },

  /** Failed revocations worth retrying: last attempt before `attemptedBefore`, and the credential not yet dead by itself. */
  async retryable(q: Q, attemptedBefore: number, now: number, limit = 200): Promise<CredentialRow[]> {
    return (
      await q('credentials')
        .where({ state: 'revoke_failed' })
        .andWhere('revoked_at', '<', attemptedBefore)
        .andWhere('expires_at', '>', now)
        .orderBy('revoked_at')
        .limit(limit)
    ).map(fromRow);
  },

  async bySession(q: Q, sid: string): Promise<CredentialRow[]> {
    return (await q('credentials').where({ sid }).orderBy('created_at')).map(fromRow);
  },

  /** Credentials that may still work at `at`: issued (revocable or not) or with a revocation not yet confirmed. */
  async alive(q: Q, at: number, opts: { sid?: string; limit?: number } = {}): Promise<CredentialRow[]> {
    let b = q('credentials')
      .whereIn('state', ['issued', 'revoke_failed'])
      .andWhere('expires_at', '>', at)
      .orderBy('created_at', 'desc')
      .limit(opts.limit ?? 1000);
    if (opts.sid) b = b.where({ sid: opts.sid });
    return (await b).map(fromRow);
  },
};

/**
 * What one IAM deny entry denies (migration 002); null for a legacy per-revocation inline policy.
 * `expiry` is legacy too: an earlier build denied short-token STS credentials at their token's exp
 * (their session policy does that now); such rows are left out of every rebuilt policy and dropped once due.
 */
