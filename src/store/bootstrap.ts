import { type Q, num, numOrNull } from './db.ts';

/** A one-time bootstrap token. Only the SHA-256 of the token value is ever stored. */
export interface BootstrapRecord {
  id: string;
  agentId: string;
  tokenHash: string;
  /** When set, the session it opens may ask for these scopes only (space-separated). */
  scope: string | null;
  createdAt: number;
  expiresAt: number;
  usedAt: number | null;
  usedSid: string | null;
}

const fromRow = (r: Record<string, unknown>): BootstrapRecord => ({
  id: r.id as string,
  agentId: r.agent_id as string,
  tokenHash: r.token_hash as string,
  scope: (r.scope as string | null) ?? null,
  createdAt: num(r.created_at),
  expiresAt: num(r.expires_at),
  usedAt: numOrNull(r.used_at),
  usedSid: (r.used_sid as string | null) ?? null,
});

export const bootstrapTokens = {
  async insert(q: Q, t: BootstrapRecord): Promise<void> {
    await q('bootstrap_tokens').insert({
      id: t.id,
      agent_id: t.agentId,
      token_hash: t.tokenHash,
      scope: t.scope,
      created_at: t.createdAt,
      expires_at: t.expiresAt,
      used_at: t.usedAt,
      used_sid: t.usedSid,
    });
  },
  async byHash(q: Q, tokenHash: string): Promise<BootstrapRecord | undefined> {
    const r = await q('bootstrap_tokens').where({ token_hash: tokenHash }).first();
    return r ? fromRow(r) : undefined;
  },
  async get(q: Q, id: string): Promise<BootstrapRecord | undefined> {
    const r = await q('bootstrap_tokens').where({ id }).first();
    return r ? fromRow(r) : undefined;
  },
  async listByAgent(q: Q, agentId: string): Promise<BootstrapRecord[]> {
    return (await q('bootstrap_tokens').where({ agent_id: agentId }).orderBy('created_at')).map(fromRow);
  },
  /**
   * The single-use gate, run inside the transaction that opens the session: one conditional
   * UPDATE, so of any number of concurrent redemptions (on one broker or on replicas sharing
   * PostgreSQL) exactly one changes the row, and the token dies in the same commit as the session
   * it opens and that session's audit row. A refused or failed session start leaves it unused.
   */
  async redeem(q: Q, id: string, now: number, sid: string): Promise<boolean> {
    const n = await q('bootstrap_tokens').where({ id }).whereNull('used_at').andWhere('expires_at', '>', now).update({ used_at: now, used_sid: sid });
    return n > 0;
  },
};
