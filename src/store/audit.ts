import { type Q, isPostgres, num } from './db.ts';

export type Decision = 'allow' | 'deny' | 'info';

export interface AuditRow {
  seq: number;
  at: number;
  event: string;
  decision: Decision;
  agentId: string | null;
  sid: string | null;
  jti: string | null;
  chain: string[] | null;
  reason: string | null;
  params: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/**
 * A stored JSON column. A value that no longer parses (the table was edited by hand) is kept as
 * text under a marker key: the row then fails its hash check, and `audit verify` names it,
 * instead of every reader stopping at a JSON error.
 */
const storedJson = (text: unknown): any => {
  try {
    return JSON.parse(text as string);
  } catch {
    return { '!unparseable': String(text) };
  }
};

const fromRow = (r: Record<string, unknown>): AuditRow => ({
  seq: num(r.seq),
  at: num(r.at),
  event: r.event as string,
  decision: r.decision as Decision,
  agentId: (r.agent_id as string | null) ?? null,
  sid: (r.sid as string | null) ?? null,
  jti: (r.jti as string | null) ?? null,
  chain: r.chain ? storedJson(r.chain) : null,
  reason: (r.reason as string | null) ?? null,
  params: storedJson(r.params),
  prevHash: r.prev_hash as string,
  hash: r.hash as string,
});

/** Raw row access. Hashing and the chain rules live in src/audit/. */
export const auditRows = {
  /** Serialises appenders across replicas: on PostgreSQL a transaction-scoped advisory lock; SQLite has one writer. */
  async lockChain(q: Q): Promise<void> {
    if (isPostgres(q)) await q.raw('SELECT pg_advisory_xact_lock(7201)');
  },
  async head(q: Q): Promise<{ seq: number; hash: string } | undefined> {
    const r = await q('audit').select('seq', 'hash').orderBy('seq', 'desc').first();
    return r ? { seq: num(r.seq), hash: r.hash as string } : undefined;
  },
  async insert(q: Q, row: AuditRow): Promise<void> {
    await auditRows.insertMany(q, [row]);
  },
  async insertMany(q: Q, rows: readonly AuditRow[]): Promise<void> {
    const values = rows.map((row) => ({
      seq: row.seq,
      at: row.at,
      event: row.event,
      decision: row.decision,
      agent_id: row.agentId,
      sid: row.sid,
      jti: row.jti,
      chain: row.chain ? JSON.stringify(row.chain) : null,
      reason: row.reason,
      params: JSON.stringify(row.params),
      prev_hash: row.prevHash,
      hash: row.hash,
    }));
    for (let i = 0; i < values.length; i += 50) await q('audit').insert(values.slice(i, i + 50));
  },
  async page(q: Q, afterSeq: number, limit: number): Promise<AuditRow[]> {
    return (await q('audit').where('seq', '>', afterSeq).orderBy('seq').limit(limit)).map(fromRow);
  },
  async tail(q: Q, n: number): Promise<AuditRow[]> {
    return (await q('audit').orderBy('seq', 'desc').limit(n)).map(fromRow).reverse();
  },
  async bySession(q: Q, sid: string): Promise<AuditRow[]> {
    return (await q('audit').where({ sid }).orderBy('seq')).map(fromRow);
  },
  /**
   * Gateway traffic since `since` (ms), by decision: `gateway.call` rows counted per upstream,
   * `egress.connect` rows per host, and `deny` rows (refusals naming no known agent: no token, a
   * forged one) per what they attempted. Rows are appended in time order, so the window's first
   * row is found by a binary search on `seq` (the primary key), not by scanning the log for `at`.
   */
  async gatewayTraffic(
    q: Q,
    since: number,
  ): Promise<Array<{ event: 'gateway.call' | 'mcp.call' | 'egress.connect' | 'deny'; name: string; decision: Decision; count: number }>> {
    const from = await firstSeqAtOrAfter(q, since);
    if (from === undefined) return [];
    // A row edited into invalid JSON (audit verify names it) must not stop the count on SQLite; PostgreSQL's cast refuses it.
    const field = (key: string): string =>
      isPostgres(q) ? `(params::jsonb ->> '${key}')` : `(CASE WHEN json_valid(params) THEN json_extract(params, '$.${key}') END)`;
    const name = `CASE event WHEN 'gateway.call' THEN ${field('upstream')} WHEN 'mcp.call' THEN ${field('upstream')} WHEN 'egress.connect' THEN ${field('host')} ELSE ${field('attempted')} END`;
    const rows = await q('audit')
      .select('event', 'decision', q.raw(`${name} AS name`), q.raw('COUNT(*) AS n'))
      .where('seq', '>=', from)
      .andWhere('at', '>=', since)
      .whereIn('event', ['gateway.call', 'mcp.call', 'egress.connect', 'deny'])
      .groupByRaw(`event, decision, ${name}`);
    return rows.map((r: Record<string, unknown>) => ({
      event: r.event as 'gateway.call' | 'mcp.call' | 'egress.connect' | 'deny',
      name: String(r.name ?? '?'),
      decision: r.decision as Decision,
      count: num(r.n),
    }));
  },
};

/** The lowest seq whose row is at or after `at` (rows are appended in time order), or undefined when none is. */
async function firstSeqAtOrAfter(q: Q, at: number): Promise<number | undefined> {
  const bounds = await q('audit').min('seq as lo').max('seq as hi').first();
  let lo = num(bounds?.lo);
  let hi = num(bounds?.hi);
  if (!hi) return undefined;
  const atOf = async (seq: number): Promise<{ seq: number; at: number }> => {
    const r = await q('audit').select('seq', 'at').where('seq', '>=', seq).orderBy('seq').first();
    return { seq: num(r.seq), at: num(r.at) };
  };
  if ((await atOf(hi)).at < at) return undefined;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const r = await atOf(mid);
    if (r.at >= at) hi = Math.min(mid, r.seq);
    else lo = r.seq + 1;
  }
  return lo;
}
