/** `cordon audit tail|verify|export`. */
import type { Command } from 'commander';
import { auditRows, type AuditRow } from '../store/audit.ts';
import { verifyAudit } from '../audit/verify.ts';
import { agents } from '../store/agents.ts';
import type { Q } from '../store/db.ts';
import { action, leaf, withBroker, type Ctx } from './context.ts';
import { CliError, clip, fmtTime, iso, printJson, table, usage } from './output.ts';

/** One audit row as machines get it: every hashed field (so the chain can be re-verified elsewhere) plus a readable time. */
export const auditJson = (r: AuditRow): Record<string, unknown> => ({
  seq: r.seq,
  at: r.at,
  time: iso(r.at),
  event: r.event,
  decision: r.decision,
  agent_id: r.agentId,
  sid: r.sid,
  jti: r.jti,
  chain: r.chain,
  reason: r.reason,
  params: r.params,
  prev_hash: r.prevHash,
  hash: r.hash,
});

/** A short, readable digest of a row's params for the table. */
function paramsDigest(p: Record<string, unknown>): string {
  const keep = ['scope', 'requested_scope', 'task', 'name', 'policy', 'target', 'kid', 'requested_actor', 'revoked_count', 'by'];
  const parts: string[] = [];
  for (const k of keep) {
    const v = p[k];
    if (v === undefined || v === null || v === '') continue;
    parts.push(`${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return parts.join(' ');
}

/** Rows for people; agent ids are shown by name when `names` knows them. */
export function auditTable(rows: AuditRow[], names: Map<string, string> = new Map()): string {
  return table(
    ['SEQ', 'TIME', 'EVENT', 'DECISION', 'AGENT', 'SID', 'DETAIL'],
    rows.map((r) => [r.seq, fmtTime(r.at), r.event, r.decision, r.agentId ? (names.get(r.agentId) ?? r.agentId) : null, r.sid, clip([r.reason, paramsDigest(r.params)].filter(Boolean).join(' | '), 90)]),
  );
}

export const agentNames = async (q: Q): Promise<Map<string, string>> => new Map((await agents.list(q)).map((a) => [a.id, a.name]));

const wholeNumber = (flag: string, v: string, min: number): number => {
  if (!/^\d{1,15}$/.test(v) || Number(v) < min) throw usage(`${flag} must be a whole number${min ? ` from ${min}` : ''}, got "${v}"`);
  return Number(v);
};

export function registerAudit(program: Command, ctx: Ctx): void {
  const audit = program.command('audit').description('read, verify and export the hash-chained audit log');

  leaf(audit, 'tail', 'the last audit rows')
    .option('-n, --lines <n>', 'how many rows', '20')
    .action(
      action(ctx, async ({ opts, json }) => {
        const n = wholeNumber('-n', opts.lines, 1);
        const { rows, names } = await withBroker(ctx, async (b) => ({ rows: await auditRows.tail(b.db, Math.min(n, 100_000)), names: await agentNames(b.db) }));
        if (json) return void (await printJson(ctx.io, rows.map(auditJson)));
        if (!rows.length) return void ctx.io.out('The audit log is empty.\n');
        ctx.io.out(auditTable(rows, names));
      }),
    );

  leaf(audit, 'verify', 'walk the hash chain and name the first broken row')
    .option('--head <hash>', 'a head hash exported earlier (verify --json): the chain must still hold it')
    .action(
      action(ctx, async ({ opts, json }) => {
        if (opts.head !== undefined && !/^[0-9a-f]{64}$/.test(opts.head)) throw usage('--head must be a head hash as audit verify --json prints it (64 hex digits)');
        const r = await withBroker(ctx, (b) => verifyAudit(b.db, undefined, opts.head));
        if (json) {
          await printJson(ctx.io, r.ok ? { ok: true, rows: r.rows, head: r.head } : { ok: false, rows_verified: r.rows, broken_seq: r.brokenSeq, problem: r.problem });
          if (!r.ok) ctx.io.err(`cordon: audit chain broken at row ${r.brokenSeq}: ${r.problem}\n`);
          return r.ok ? 0 : 1;
        }
        if (r.ok) return void ctx.io.out(`audit chain intact: ${r.rows} row${r.rows === 1 ? '' : 's'}, head ${r.head}\n`);
        throw new CliError(`audit chain broken at row ${r.brokenSeq}: ${r.problem} (${r.rows} row${r.rows === 1 ? '' : 's'} before it verify)`);
      }),
    );

  leaf(audit, 'export', 'write audit rows to stdout, one JSON object per line (for a SIEM)')
    .option('--format <format>', 'jsonl', 'jsonl')
    .option('--since <seq>', 'only rows after this sequence number', '0')
    .action(
      action(ctx, async ({ opts }) => {
        // --json is accepted for uniformity; the output is JSON lines either way.
        if (opts.format !== 'jsonl') throw usage(`--format must be jsonl, got "${opts.format}"`);
        let after = wholeNumber('--since', opts.since, 0);
        await withBroker(ctx, async (b) => {
          for (;;) {
            const page = await auditRows.page(b.db, after, 1000);
            if (!page.length) break;
            await ctx.io.out(page.map((r) => `${JSON.stringify(auditJson(r))}\n`).join(''));
            after = page[page.length - 1].seq;
          }
        });
      }),
    );
}
