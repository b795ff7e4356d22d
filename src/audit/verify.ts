import type { Q } from '../store/db.ts';
import { auditRows } from '../store/audit.ts';
import { GENESIS_HASH, rowHash } from './log.ts';

export type VerifyResult =
  | { ok: true; rows: number; head: string }
  | { ok: false; rows: number; brokenSeq: number; problem: string };

/**
 * Walks the whole chain in pages; names the first row whose hash, link or sequence is wrong. With
 * `head` (a head hash exported earlier), the chain must also still hold that row: a chain cut or
 * rewritten after it verifies on its own, but no longer contains it.
 */
export async function verifyAudit(q: Q, pageSize = 2000, head?: string): Promise<VerifyResult> {
  let prev = GENESIS_HASH;
  let expectSeq = 1;
  let count = 0;
  let headSeen = head === undefined || head === GENESIS_HASH;
  for (;;) {
    const page = await auditRows.page(q, expectSeq - 1, pageSize);
    if (!page.length) {
      if (!headSeen) return { ok: false, rows: count, brokenSeq: count + 1, problem: `the chain no longer holds the exported head ${head}: rows after it were removed, or the log was rewritten` };
      return { ok: true, rows: count, head: prev };
    }
    for (const row of page) {
      if (row.seq !== expectSeq) return { ok: false, rows: count, brokenSeq: expectSeq, problem: `row ${expectSeq} is missing (next row is ${row.seq})` };
      if (row.prevHash !== prev) return { ok: false, rows: count, brokenSeq: row.seq, problem: `row ${row.seq} does not link to row ${row.seq - 1}` };
      const { hash, ...rest } = row;
      if (rowHash(rest) !== hash) return { ok: false, rows: count, brokenSeq: row.seq, problem: `row ${row.seq} was altered (hash mismatch)` };
      prev = hash;
      if (hash === head) headSeen = true;
      expectSeq += 1;
      count += 1;
    }
  }
}
