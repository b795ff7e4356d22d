import { type Q, num } from './db.ts';

export type RevocationKind = 'jti' | 'sid' | 'agent';
export interface Revocation {
  seq: number;
  kind: RevocationKind;
  value: string;
  expiresAt: number;
  revokedAt: number;
}

export const revocations = {
  async add(q: Q, entries: Array<Omit<Revocation, 'seq'>>): Promise<void> {
    const rows = entries.map((e) => ({ kind: e.kind, value: e.value, expires_at: e.expiresAt, revoked_at: e.revokedAt }));
    for (let i = 0; i < rows.length; i += 200) await q('revocations').insert(rows.slice(i, i + 200));
  },
  /** Entries after the cursor, in order; callers drop the ones already expired but advance past them. */
  async since(q: Q, cursor: number, limit = 1000): Promise<Revocation[]> {
    const rows = await q('revocations').where('seq', '>', cursor).orderBy('seq').limit(limit);
    return rows.map((r) => ({ seq: num(r.seq), kind: r.kind, value: r.value, expiresAt: num(r.expires_at), revokedAt: num(r.revoked_at) }));
  },
  async lastSeq(q: Q): Promise<number> {
    const r = await q('revocations').max({ m: 'seq' }).first();
    return num(r?.m);
  },
};
