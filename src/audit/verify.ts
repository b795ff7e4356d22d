import type { Q } from '../store/db.ts';
import { auditRows } from '../store/audit.ts';
import { GENESIS_HASH, rowHash } from '../store/audit-chain.ts';

export type VerifyResult = { ok: true; rows: number; head: string } | { ok: false; rows: number; brokenSeq: number; problem: string };

/**
 * Walks the whole chain in pages; names the first row whose hash, link or sequence is wrong. With
 * `head` (a head hash exported earlier), the chain must also still hold that row: a chain cut or
 * rewritten after it verifies on its own, but no longer contains it. `checkpoints` (signed heads,
 * already verified, in seq order) do the same for each: the row at each one's seq must carry its
 * hash, and the chain must reach the latest.
 */
export async function verifyAudit(q: Q, pageSize = 2000, head?: string, checkpoints: ReadonlyArray<{ seq: number; hash: string }> = []): Promise<VerifyResult> {
  let prev = GENESIS_HASH;
  let expectSeq = 1;
  let count = 0;
  let headSeen = head === undefined || head === GENESIS_HASH;
  const signed = new Map(checkpoints.map((c) => [c.seq, c.hash]));
  const latestSigned = checkpoints.length ? checkpoints[checkpoints.length - 1].seq : 0;
  let lastMatched = 0;
  for (;;) {
    const page = await auditRows.page(q, expectSeq - 1, pageSize);
    if (!page.length) {
      if (count < latestSigned)
        return {
          ok: false,
          rows: count,
          brokenSeq: count + 1,
          problem: `the chain ends at row ${count} but a signed checkpoint covers row ${latestSigned}: rows ${count + 1} to ${latestSigned} were removed`,
        };
      if (!headSeen)
        return {
          ok: false,
          rows: count,
          brokenSeq: count + 1,
          problem: `the chain no longer holds the exported head ${head}: rows after it were removed, or the log was rewritten`,
        };
      return { ok: true, rows: count, head: prev };
    }
    for (const row of page) {
      if (row.seq !== expectSeq) return { ok: false, rows: count, brokenSeq: expectSeq, problem: `row ${expectSeq} is missing (next row is ${row.seq})` };
      if (row.prevHash !== prev) return { ok: false, rows: count, brokenSeq: row.seq, problem: `row ${row.seq} does not link to row ${row.seq - 1}` };
      const { hash, ...rest } = row;
      if (rowHash(rest) !== hash) return { ok: false, rows: count, brokenSeq: row.seq, problem: `row ${row.seq} was altered (hash mismatch)` };
      const signedHash = signed.get(row.seq);
      if (signedHash !== undefined) {
        // The chain verifies by itself, so it was rewritten from some row on and re-hashed: the
        // signature pins the head, not which row, so name the range since the last matching checkpoint.
        if (signedHash !== hash)
          return {
            ok: false,
            rows: count,
            brokenSeq: row.seq,
            problem: `row ${row.seq} does not match the signed checkpoint for it: ${lastMatched + 1 === row.seq ? `row ${row.seq} was` : `a row from ${lastMatched + 1} to ${row.seq} was`} changed, removed or reordered, and the chain re-hashed`,
          };
        lastMatched = row.seq;
      }
      prev = hash;
      if (hash === head) headSeen = true;
      expectSeq += 1;
      count += 1;
    }
  }
}
