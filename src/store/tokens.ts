import { type Q, isPostgres, num, numOrNull } from './db.ts';

export interface TokenRecord {
  jti: string;
  sid: string;
  clientId: string;
  parentJti: string | null;
  scope: string;
  audience: string[];
  depth: number;
  act: Record<string, unknown> | null;
  cnfJkt: string | null;
  kid: string;
  issuedAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

const fromRow = (r: Record<string, unknown>): TokenRecord => ({
  jti: r.jti as string,
  sid: r.sid as string,
  clientId: r.client_id as string,
  parentJti: (r.parent_jti as string | null) ?? null,
  scope: r.scope as string,
  audience: JSON.parse(r.audience as string),
  depth: num(r.depth),
  act: r.act ? JSON.parse(r.act as string) : null,
  cnfJkt: (r.cnf_jkt as string | null) ?? null,
  kid: r.kid as string,
  issuedAt: num(r.issued_at),
  expiresAt: num(r.expires_at),
  revokedAt: numOrNull(r.revoked_at),
});

/** SQLite caps bound variables per statement; chunk long IN lists. */
const CHUNK = 500;

export const tokens = {
  async insert(q: Q, t: TokenRecord): Promise<void> {
    await tokens.insertMany(q, [t]);
  },
  async insertMany(q: Q, list: readonly TokenRecord[]): Promise<void> {
    const rows = list.map((t) => ({
      jti: t.jti,
      sid: t.sid,
      client_id: t.clientId,
      parent_jti: t.parentJti,
      scope: t.scope,
      audience: JSON.stringify(t.audience),
      depth: t.depth,
      act: t.act ? JSON.stringify(t.act) : null,
      cnf_jkt: t.cnfJkt,
      kid: t.kid,
      issued_at: t.issuedAt,
      expires_at: t.expiresAt,
      revoked_at: t.revokedAt,
    }));
    for (let i = 0; i < rows.length; i += 50) await q('tokens').insert(rows.slice(i, i + 50));
  },
  async get(q: Q, jti: string): Promise<TokenRecord | undefined> {
    const r = await q('tokens').where({ jti }).first();
    return r ? fromRow(r) : undefined;
  },
  async bySession(q: Q, sid: string): Promise<TokenRecord[]> {
    return (await q('tokens').where({ sid }).orderBy('issued_at').orderBy('depth')).map(fromRow);
  },
  /** The token and every token delegated from it, breadth first (one query per level). */
  async subtree(q: Q, jti: string, opts: { lock?: boolean } = {}): Promise<TokenRecord[]> {
    // With `lock` (PostgreSQL, inside a revocation), every row is locked as it is read: a delegation
    // holding a share lock on a node commits its child before this walk reads that node's children,
    // and one that comes later waits and then sees the node revoked.
    const lock = opts.lock && isPostgres(q);
    const rootQ = q('tokens').where({ jti });
    const rootRow = await (lock ? rootQ.forUpdate() : rootQ).first();
    if (!rootRow) return [];
    const root = fromRow(rootRow);
    const out = [root];
    let frontier = [root.jti];
    while (frontier.length) {
      const next: TokenRecord[] = [];
      for (let i = 0; i < frontier.length; i += CHUNK) {
        const levelQ = q('tokens').whereIn('parent_jti', frontier.slice(i, i + CHUNK));
        const rows = await (lock ? levelQ.forUpdate() : levelQ);
        next.push(...rows.map(fromRow));
      }
      out.push(...next);
      frontier = next.map((t) => t.jti);
    }
    return out;
  },
  /** Marks the given tokens revoked; returns the jtis that were live (not already revoked). */
  async revokeMany(q: Q, jtis: string[], at: number): Promise<string[]> {
    const changed: string[] = [];
    for (let i = 0; i < jtis.length; i += CHUNK) {
      const part = jtis.slice(i, i + CHUNK);
      const live = await q('tokens').select('jti').whereIn('jti', part).whereNull('revoked_at');
      const ids = live.map((r) => r.jti as string);
      if (ids.length) await q('tokens').whereIn('jti', ids).update({ revoked_at: at });
      changed.push(...ids);
    }
    return changed;
  },
  async revokeSession(q: Q, sid: string, at: number): Promise<number> {
    return q('tokens').where({ sid }).whereNull('revoked_at').update({ revoked_at: at });
  },
  /** Tokens held by an agent that are neither revoked nor expired. */
  async liveHeldBy(q: Q, clientId: string, at: number): Promise<string[]> {
    return (await q('tokens').select('jti').where({ client_id: clientId }).whereNull('revoked_at').andWhere('expires_at', '>', at)).map((r) => r.jti as string);
  },
  /** How many tokens each of these sessions holds. */
  async countBySids(q: Q, sids: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (let i = 0; i < sids.length; i += CHUNK) {
      const rows = await q('tokens')
        .select('sid')
        .count({ n: '*' })
        .whereIn('sid', sids.slice(i, i + CHUNK))
        .groupBy('sid');
      for (const r of rows as Array<Record<string, unknown>>) out.set(r.sid as string, num(r.n));
    }
    return out;
  },
  /** Tokens of these holders that live longer than `capMs` (the lifetime invariant; must be none). */
  async overCap(q: Q, clientIds: string[], capMs: number, limit = 100): Promise<Array<{ jti: string; clientId: string; issuedAt: number; expiresAt: number }>> {
    const rows = await q('tokens')
      .select('jti', 'client_id', 'issued_at', 'expires_at')
      .whereIn('client_id', clientIds)
      .whereRaw('expires_at - issued_at > ?', [capMs])
      .limit(limit);
    return rows.map((r) => ({ jti: r.jti as string, clientId: r.client_id as string, issuedAt: num(r.issued_at), expiresAt: num(r.expires_at) }));
  },
  async countLive(q: Q, at: number): Promise<Array<{ clientId: string; count: number }>> {
    const rows = await q('tokens').select('client_id').count({ n: '*' }).whereNull('revoked_at').andWhere('expires_at', '>', at).groupBy('client_id');
    return (rows as Array<Record<string, unknown>>).map((r) => ({ clientId: r.client_id as string, count: num(r.n) }));
  },
  async maxExpiryByKid(q: Q, kid: string): Promise<number> {
    const r = await q('tokens').max({ m: 'expires_at' }).where({ kid }).first();
    return num(r?.m);
  },
};
