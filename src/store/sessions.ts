import { type Q, num, numOrNull } from './db.ts';

export type SessionOrigin = 'client_credentials' | 'bootstrap' | 'federation';

export interface Session {
  sid: string;
  agentId: string;
  task: string | null;
  scope: string;
  audience: string[];
  origin: SessionOrigin;
  subject: string;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
  revokeReason: string | null;
  sweptAt: number | null;
}

const fromRow = (r: Record<string, unknown>): Session => ({
  sid: r.sid as string,
  agentId: r.agent_id as string,
  task: (r.task as string | null) ?? null,
  scope: r.scope as string,
  audience: JSON.parse(r.audience as string),
  origin: r.origin as SessionOrigin,
  subject: r.subject as string,
  createdAt: num(r.created_at),
  expiresAt: num(r.expires_at),
  revokedAt: numOrNull(r.revoked_at),
  revokeReason: (r.revoke_reason as string | null) ?? null,
  sweptAt: numOrNull(r.swept_at),
});

export const sessions = {
  async insert(q: Q, s: Session): Promise<void> {
    await sessions.insertMany(q, [s]);
  },
  async insertMany(q: Q, list: readonly Session[]): Promise<void> {
    const rows = list.map((s) => ({
      sid: s.sid,
      agent_id: s.agentId,
      task: s.task,
      scope: s.scope,
      audience: JSON.stringify(s.audience),
      origin: s.origin,
      subject: s.subject,
      created_at: s.createdAt,
      expires_at: s.expiresAt,
      revoked_at: s.revokedAt,
      revoke_reason: s.revokeReason,
      swept_at: s.sweptAt,
    }));
    for (let i = 0; i < rows.length; i += 50) await q('sessions').insert(rows.slice(i, i + 50));
  },
  async get(q: Q, sid: string): Promise<Session | undefined> {
    const r = await q('sessions').where({ sid }).first();
    return r ? fromRow(r) : undefined;
  },
  async list(q: Q, opts: { agentId?: string; liveAt?: number; limit?: number } = {}): Promise<Session[]> {
    let b = q('sessions')
      .orderBy('created_at', 'desc')
      .limit(opts.limit ?? 100);
    if (opts.agentId) b = b.where({ agent_id: opts.agentId });
    if (opts.liveAt !== undefined) b = b.whereNull('revoked_at').andWhere('expires_at', '>', opts.liveAt);
    return (await b).map(fromRow);
  },
  /** Marks a session revoked; returns false when it already was. */
  async revoke(q: Q, sid: string, at: number, reason: string): Promise<boolean> {
    const n = await q('sessions').where({ sid }).whereNull('revoked_at').update({ revoked_at: at, revoke_reason: reason });
    return n > 0;
  },
  async liveSidsOfAgent(q: Q, agentId: string, at: number): Promise<Array<{ sid: string; expiresAt: number }>> {
    const rows = await q('sessions').select('sid', 'expires_at').where({ agent_id: agentId }).whereNull('revoked_at').andWhere('expires_at', '>', at);
    return rows.map((r) => ({ sid: r.sid as string, expiresAt: num(r.expires_at) }));
  },
  /** Sessions whose backend credentials still need cleaning: ended (expired or revoked) and not yet swept. */
  async endedUnswept(q: Q, at: number, limit = 100): Promise<Session[]> {
    const rows = await q('sessions')
      .whereNull('swept_at')
      // eslint-disable-next-line @typescript-eslint/no-misused-promises -- a knex builder is thenable; this callback only builds the clause
      .andWhere((w) => w.whereNotNull('revoked_at').orWhere('expires_at', '<=', at))
      .orderBy('expires_at')
      .limit(limit);
    return rows.map(fromRow);
  },
  async markSwept(q: Q, sid: string, at: number): Promise<boolean> {
    return (await q('sessions').where({ sid }).whereNull('swept_at').update({ swept_at: at })) > 0;
  },
  async countLive(q: Q, at: number): Promise<Array<{ agentId: string; count: number }>> {
    const rows = await q('sessions').select('agent_id').count({ n: '*' }).whereNull('revoked_at').andWhere('expires_at', '>', at).groupBy('agent_id');
    return (rows as Array<Record<string, unknown>>).map((r) => ({ agentId: r.agent_id as string, count: num(r.n) }));
  },
  /** Sessions of these agents that live longer than `capMs` (the lifetime invariant; must be none). */
  async overCapOf(q: Q, agentIds: string[], capMs: number, limit = 100): Promise<Session[]> {
    return (await q('sessions').whereIn('agent_id', agentIds).whereRaw('expires_at - created_at > ?', [capMs]).limit(limit)).map(fromRow);
  },
  /** Records whose lifetime exceeds their session cap: must always be empty. */
  async overCap(q: Q, capMsOfPolicy: (agentId: string) => number | undefined): Promise<Session[]> {
    const all = (await q('sessions').select('*')).map(fromRow);
    return all.filter((s) => {
      const cap = capMsOfPolicy(s.agentId);
      return cap !== undefined && s.expiresAt - s.createdAt > cap;
    });
  },
};
