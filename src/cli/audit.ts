/** `cordon audit tail|verify|export`. */
import type { Command } from 'commander';
import { auditRows, type AuditRow } from '../store/audit.ts';
import { checkpointJwks, checkpointPath, readSink, verifyWithCheckpoints, type SinkLine } from '../audit/checkpoint.ts';
import { rowCanonical } from '../store/audit-chain.ts';
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
  const keep = [
    ...['scope', 'requested_scope', 'task', 'name', 'policy', 'target', 'kid', 'requested_actor', 'revoked_count', 'by'],
    // Gateway calls and tunnels: where to, and what came back.
    ...['upstream', 'method', 'path', 'rule', 'status', 'host', 'port'],
  ];
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
    rows.map((r) => [
      r.seq,
      fmtTime(r.at),
      r.event,
      r.decision,
      r.agentId ? (names.get(r.agentId) ?? r.agentId) : null,
      r.sid,
      clip([r.reason, paramsDigest(r.params)].filter(Boolean).join(' | '), 90),
    ]),
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
        await ctx.io.out(auditTable(rows, names));
      }),
    );

  leaf(audit, 'verify', 'walk the hash chain and check it against the signed checkpoints; name the first broken row')
    .option('--head <hash>', 'a head hash exported earlier (verify --json): the chain must still hold it')
    .action(
      action(ctx, async ({ opts, json }) => {
        if (opts.head !== undefined && !/^[0-9a-f]{64}$/.test(opts.head))
          throw usage('--head must be a head hash as audit verify --json prints it (64 hex digits)');
        const { r, sink } = await withBroker(ctx, async (b) => ({
          r: await verifyWithCheckpoints(b.db, b.config, opts.head),
          sink: checkpointPath(b.config.auditDir),
        }));
        const where = r.ok
          ? ''
          : r.checkpointLine !== undefined
            ? `audit checkpoint broken: ${r.problem}`
            : `audit chain broken at row ${r.brokenSeq}: ${r.problem}`;
        if (json) {
          await printJson(
            ctx.io,
            r.ok
              ? { ok: true, rows: r.rows, head: r.head, checkpoints: r.checkpoints, checkpoint_seq: r.checkpointSeq }
              : {
                  ok: false,
                  rows_verified: r.rows,
                  broken_seq: r.brokenSeq,
                  problem: r.problem,
                  ...(r.checkpointLine !== undefined ? { checkpoint_line: r.checkpointLine } : {}),
                },
          );
          if (!r.ok) ctx.io.err(`cordon: ${where}\n`);
          return r.ok ? 0 : 1;
        }
        if (r.ok) {
          const cps = r.checkpoints
            ? `${r.checkpoints} signed checkpoint${r.checkpoints === 1 ? '' : 's'} verified, the latest at row ${r.checkpointSeq}`
            : `no checkpoints found (${sink})`;
          return void ctx.io.out(`audit chain intact: ${r.rows} row${r.rows === 1 ? '' : 's'}, head ${r.head}; ${cps}\n`);
        }
        if (r.checkpointLine !== undefined) throw new CliError(where);
        throw new CliError(`${where} (${r.rows} row${r.rows === 1 ? '' : 's'} before it verify)`);
      }),
    );

  leaf(audit, 'export', 'write audit rows and signed checkpoints to stdout, one JSON object per line (for a SIEM)')
    .option('--format <format>', 'jsonl', 'jsonl')
    .option('--since <seq>', 'only rows (and checkpoints) after this sequence number', '0')
    .action(
      action(ctx, async ({ opts }) => {
        // --json is accepted for uniformity; the output is JSON lines either way.
        if (opts.format !== 'jsonl') throw usage(`--format must be jsonl, got "${opts.format}"`);
        let after = wholeNumber('--since', opts.since, 0);
        await withBroker(ctx, async (b) => {
          // Lines, in order: the public keys of the checkpoints (when there are any), then every row,
          // each followed by the checkpoints that sign it, then checkpoints of rows the chain lacks.
          const sink = readSink(b.config.auditDir).filter((l) => !l.checkpoint || l.checkpoint.seq > after);
          const pending = sink.filter((l) => l.checkpoint).sort((x, y) => x.checkpoint!.seq - y.checkpoint!.seq);
          if (sink.length) await ctx.io.out(`${JSON.stringify({ type: 'keys', keys: checkpointJwks(b.config.keyDir, sink) })}\n`);
          for (;;) {
            const page = await auditRows.page(b.db, after, 1000);
            if (!page.length) break;
            let out = '';
            for (const r of page) {
              out += `${JSON.stringify(exportRow(r))}\n`;
              while (pending.length && pending[0].checkpoint!.seq <= r.seq) out += `${JSON.stringify(exportCheckpoint(pending.shift()!))}\n`;
            }
            await ctx.io.out(out);
            after = page[page.length - 1].seq;
          }
          const rest = [...pending, ...sink.filter((l) => !l.checkpoint)];
          if (rest.length) await ctx.io.out(rest.map((l) => `${JSON.stringify(exportCheckpoint(l))}\n`).join(''));
        });
      }),
    );
}

/** A row for export: every hashed field, plus `canonical`, the exact text after `prev_hash` and a newline that its hash covers. */
const exportRow = (r: AuditRow): Record<string, unknown> => ({ type: 'row', ...auditJson(r), canonical: rowCanonical(r) });

/** A checkpoint for export, as decoded from the sink; the consumer verifies `jws` with the exported keys. */
const exportCheckpoint = (l: SinkLine): Record<string, unknown> =>
  l.checkpoint
    ? { type: 'checkpoint', seq: l.checkpoint.seq, hash: l.checkpoint.hash, kid: l.checkpoint.kid, iat: l.checkpoint.iat, jws: l.jws }
    : { type: 'checkpoint', seq: null, hash: null, line: l.line, jws: l.jws };
