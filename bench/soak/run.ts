/**
 * `npm run soak -- --minutes=10`: a long run of mixed load at a fixed rate below saturation, to
 * show the broker holds it with nothing leaking (issue 13, "Soak"). Not part of `npm test`.
 *
 *   --minutes=10        how long the load runs
 *   --rate=40           operations per second, all kinds together
 *   --warmup=120        seconds before memory growth is measured (default 2 min, a third of shorter runs)
 *   --sweep=5           CORDON_SWEEP_INTERVAL of the broker, seconds
 *   --retention=2m      CORDON_RETENTION of the broker
 *   --session-ttl=120   the agents' session and token lifetime, seconds
 *   --keep              keep the temporary directory (database, broker log) for a look afterwards
 *
 * Every 30 s it prints operations, errors, the broker's RSS, heap and event-loop p99, and the
 * table sizes. At the end: memory growth after warm-up ≤ 10 %, no error, `cordon status --json`
 * showing nothing live past its cap, every backend credential of an ended session dead at the
 * doubles (revoked, for a revocation), `cordon audit verify` passing. Exit code 1 on any failure.
 */
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { Ledger } from './ledger.ts';
import { LoadGenerator } from './load.ts';
import { TableWatcher, growth, median, sample, type Sample, type TableCounts } from './observe.ts';
import { cordon, prepareWorld, startBroker, stopBroker } from './setup.ts';
import { loadConfig } from '../../src/config/index.ts';
import { FEED_GRACE_MS } from '../../src/revocation/feed.ts';

const arg = (name: string, dflt: string): string => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : dflt;
};
const num = (name: string, dflt: number): number => {
  const v = Number(arg(name, String(dflt)));
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
  return v;
};
const MINUTES = num('minutes', 10);
const RATE = num('rate', 40);
const WARMUP_MS = num('warmup', Math.min(120, (MINUTES * 60) / 3)) * 1000;
const SWEEP_SEC = num('sweep', 5);
const RETENTION = arg('retention', '2m');
const SESSION_TTL = num('session-ttl', 120);
const RETENTION_MS = loadConfig({ CORDON_RETENTION: RETENTION }).retentionMs;
const GROWTH_LIMIT = 0.1;
const SAMPLE_MS = 5000;
const REPORT_MS = 30_000;
/** Memory growth compares the first and the last minute after warm-up (12 samples each). */
const GROWTH_WINDOW_MS = 60_000;
/** Credentials are checked at the doubles this long after they should have died: the after-commit hook, or at worst two sweeps. */
const CHECK_DELAY_MS = 2 * SWEEP_SEC * 1000 + 5000;

const MiB = (b: number) => (b / 2 ** 20).toFixed(1);
const pct = (r: number) => `${r >= 0 ? '+' : ''}${(r * 100).toFixed(1)} %`;
const clock = (ms: number) => `${Math.floor(ms / 60_000)}:${String(Math.floor((ms % 60_000) / 1000)).padStart(2, '0')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

console.log(
  `soak: ${MINUTES} min at ${RATE} ops/s; sweep every ${SWEEP_SEC} s, retention ${RETENTION}, sessions live ${SESSION_TTL} s; warm-up ${WARMUP_MS / 1000} s; ` +
    `machine: ${cpus().length} CPUs, load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
);
const w = await prepareWorld({ sessionTtlSec: SESSION_TTL, sweepIntervalSec: SWEEP_SEC, retention: RETENTION });
const failures: string[] = [];
const brokerLog = join(w.dir, 'broker.log');
let exitCode = 1;

/** The broker's own warnings and errors (pino JSON lines at level 40 and up), by message. */
function brokerLogSummary(): { warnings: number; errors: number; other: number; messages: string[] } {
  const out = { warnings: 0, errors: 0, other: 0, messages: [] as string[] };
  if (!existsSync(brokerLog)) return out;
  for (const line of readFileSync(brokerLog, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let level: number;
    let msg: string;
    try {
      const j = JSON.parse(line) as { level: number; msg: string; err?: string };
      level = j.level;
      msg = `${j.msg}${j.err ? `: ${j.err}` : ''}`;
    } catch {
      out.other++; // not the broker's log: Node's and libraries' notices on stderr (runtime version warnings)
      continue;
    }
    if (level < 40) continue;
    if (level === 40) out.warnings++;
    else out.errors++;
    if (!out.messages.includes(msg) && out.messages.length < 5) out.messages.push(msg);
  }
  return out;
}
try {
  await startBroker(w);
  const pid = w.broker!.child.pid!;
  console.log(`cordon serve (pid ${pid}) at ${w.brokerUrl}, gateway ${w.gatewayUrl}, database ${w.sqliteFile}`);
  const ledger = new Ledger(w.vault, w.sts, CHECK_DELAY_MS);
  const tables = new TableWatcher(w.sqliteFile);
  const load = new LoadGenerator(w, ledger, RATE);
  const checkProblems: string[] = [];
  const samples: Sample[] = [];
  const t0 = Date.now();
  const warmupEnd = t0 + WARMUP_MS;
  let lastCounts: TableCounts | undefined;
  let sinceReport: Sample[] = [];
  let opsAtReport = 0;

  const observe = async () => {
    const s = await sample(w.brokerUrl, pid);
    samples.push(s);
    sinceReport.push(s);
    // The doubles record every request for tests; over a long run only the state matters.
    w.vault.requests.splice(0);
    w.sts.requests.splice(0);
    checkProblems.push(...ledger.check());
  };
  const report = async () => {
    const win = load.window();
    lastCounts = await tables.counts();
    const s = sinceReport[sinceReport.length - 1];
    const loopP99 = Math.max(...sinceReport.map((x) => x.loopP99Ms));
    sinceReport = [];
    const errs = load.errors.length + checkProblems.length;
    const c = lastCounts;
    console.log(
      `[${clock(Date.now() - t0)}] ops ${load.ops} (${((load.ops - opsAtReport) / (REPORT_MS / 1000)).toFixed(1)}/s, p50 ${win.p50Ms.toFixed(1)} ms, p99 ${win.p99Ms.toFixed(1)} ms) errors ${errs}` +
        ` | RSS ${MiB(s.rssBytes)} MiB heap ${MiB(s.heapUsedBytes)} MiB loop p99 ${loopP99.toFixed(1)} ms` +
        ` | rows: sessions ${c.sessions} tokens ${c.tokens} credentials ${c.credentials} revocations ${c.revocations} iam_denies ${c.iam_denies} replay ${c.replay_guard} audit ${c.audit} (${c.fileMiB.toFixed(1)} MiB)`,
    );
    opsAtReport = load.ops;
    for (const e of [...load.errors.map((x) => `${x.op}: ${x.message}`), ...checkProblems].slice(0, 5)) console.log(`    error: ${e}`);
  };

  load.start();
  let nextReport = t0 + REPORT_MS;
  while (Date.now() < t0 + MINUTES * 60_000) {
    await sleep(Math.min(SAMPLE_MS, t0 + MINUTES * 60_000 - Date.now()));
    await observe();
    if (Date.now() >= nextReport) {
      await report();
      nextReport += REPORT_MS;
    }
  }
  await load.stop();
  await observe();
  const loadErrors = load.errors.length;
  // Retention: no session that expired more than the window (plus three sweeps of slack) ago is left.
  const slack = 3 * SWEEP_SEC * 1000;
  const now = Date.now();
  const overdue = await tables.overdue(now - RETENTION_MS - slack, now - FEED_GRACE_MS - RETENTION_MS - slack);
  const overdueRows = overdue.sessions + overdue.tokens + overdue.credentials + overdue.revocations;
  const retentionApplies = now - t0 > SESSION_TTL * 1000 + RETENTION_MS + slack;
  if (retentionApplies && overdueRows) failures.push(`retention: rows left past the window: ${JSON.stringify(overdue)}`);

  // Nothing live past its cap, with sessions still live.
  const status = await cordon(w, ['status', '--json']);
  let overCap = -1;
  try {
    overCap = (JSON.parse(status.out).over_cap as unknown[]).length;
  } catch {
    failures.push(`cordon status --json: exit ${status.code}: ${status.err.trim().slice(0, 300)}`);
  }
  if (overCap > 0 || status.code !== 0) failures.push(`cordon status: ${overCap} tokens or sessions live past their cap (exit ${status.code})`);

  // End the sessions the load left live, then every credential ever handed out must be dead at its double.
  const ended = await load.endLiveSessions();
  await sleep(CHECK_DELAY_MS + 1000);
  checkProblems.push(...ledger.check());
  if (ledger.pending) failures.push(`${ledger.pending} credentials were never checked at the doubles`);
  const audit = await cordon(w, ['audit', 'verify']);
  if (audit.code !== 0) failures.push(`cordon audit verify: exit ${audit.code}: ${(audit.err || audit.out).trim().slice(0, 300)}`);
  const finalCounts = await tables.counts();
  await tables.close();
  const brokerExit = await stopBroker(w);
  if (brokerExit !== 0) failures.push(`cordon serve exited with ${brokerExit} on SIGTERM`);
  const logged = brokerLogSummary();

  // Verdict.
  const rss = growth(samples, warmupEnd, GROWTH_WINDOW_MS, (s) => s.rssBytes, median);
  const heap = growth(
    samples,
    warmupEnd,
    GROWTH_WINDOW_MS,
    (s) => s.heapUsedBytes,
    (xs) => Math.min(...xs),
  );
  const loopP99s = samples.filter((s) => s.at >= warmupEnd).map((s) => s.loopP99Ms);
  const errors = load.errors.length + checkProblems.length;
  if (errors) failures.push(`${errors} errors (${loadErrors} in operations, ${checkProblems.length} at the doubles)`);
  // The tables (and what the broker keeps per live session) only stop growing once the first
  // sessions have lived, ended and passed the retention window: a shorter run measures that growth.
  const steadyMs = SESSION_TTL * 1000 + RETENTION_MS + 3 * SWEEP_SEC * 1000;
  const memoryJudged = MINUTES * 60_000 >= steadyMs + 2 * GROWTH_WINDOW_MS;
  for (const [what, g] of [
    ['RSS', rss],
    ['heap', heap],
  ] as const) {
    if (!memoryJudged) continue;
    if (!g) failures.push(`${what}: run too short to measure growth after warm-up`);
    else if (g.ratio > GROWTH_LIMIT) failures.push(`${what} grew ${pct(g.ratio)} after warm-up (limit ${GROWTH_LIMIT * 100} %)`);
  }
  if (w.upstream.withoutKey) failures.push(`${w.upstream.withoutKey} upstream calls arrived without the injected key`);
  const t = ledger.tally;

  console.log('\nsummary');
  console.log(
    `  operations: ${load.ops} in ${MINUTES} min (${(load.ops / (MINUTES * 60)).toFixed(1)}/s offered ${RATE}/s), ${load.sessions} sessions, ${load.gatewayOk} gateway calls (${w.upstream.calls} reached the upstream), ${load.skipped} ticks skipped`,
  );
  console.log(`  errors: ${errors}`);
  for (const e of [...load.errors.map((x) => `${x.op}: ${x.message}`), ...checkProblems].slice(0, 5)) console.log(`    ${e}`);
  if (rss)
    console.log(
      `  RSS after warm-up (median, first vs last minute): ${MiB(rss.from)} → ${MiB(rss.to)} MiB (${pct(rss.ratio)}; limit +${GROWTH_LIMIT * 100} %)`,
    );
  if (heap)
    console.log(
      `  heap used after warm-up (floor: minimum, first vs last minute): ${MiB(heap.from)} → ${MiB(heap.to)} MiB (${pct(heap.ratio)}; limit +${GROWTH_LIMIT * 100} %)`,
    );
  const heapMedian = growth(samples, warmupEnd, GROWTH_WINDOW_MS, (s) => s.heapUsedBytes, median);
  if (!memoryJudged)
    console.log(
      `  memory growth not judged: the tables reach their steady size only after ${(steadyMs / 60_000).toFixed(1)} min (a session's life, the retention window, three sweeps); run at least ${Math.ceil((steadyMs + 2 * GROWTH_WINDOW_MS) / 60_000)} min`,
    );
  if (heapMedian) console.log(`  (heap used, median: ${MiB(heapMedian.from)} → ${MiB(heapMedian.to)} MiB, ${pct(heapMedian.ratio)}; not judged: a saw tooth)`);
  if (loopP99s.length)
    console.log(
      `  event-loop delay p99 per ${SAMPLE_MS / 1000} s after warm-up: median ${[...loopP99s].sort((a, b) => a - b)[Math.floor(loopP99s.length / 2)].toFixed(1)} ms, max ${Math.max(...loopP99s).toFixed(1)} ms`,
    );
  console.log(
    `  rows at the end of the load: ${Object.entries(lastCounts ?? {})
      .map(([k, v]) => `${k} ${typeof v === 'number' && k === 'fileMiB' ? v.toFixed(1) : v}`)
      .join(', ')}`,
  );
  console.log(
    `  rows after ending every session and two sweeps: ${Object.entries(finalCounts)
      .map(([k, v]) => `${k} ${k === 'fileMiB' ? v.toFixed(1) : v}`)
      .join(', ')}`,
  );
  console.log(
    retentionApplies
      ? `  rows of sessions expired more than the retention window (${RETENTION} + 3 sweeps) ago, at the end of the load: ${overdueRows} (${JSON.stringify(overdue)})`
      : `  retention: the run is shorter than a session's life plus the window; nothing was due to be pruned yet (${overdueRows} rows past it)`,
  );
  console.log(`  cordon status: over cap ${overCap} (exit ${status.code}); ${ended} sessions still live at the end were ended by their opener`);
  console.log(
    `  backend credentials checked at the doubles: ${t.checked} (Vault tokens ${t.byKind['vault-token']}, Vault leases ${t.byKind['vault-lease']}, STS ${t.byKind.sts}); ` +
      `${t.revoked} ended by a revocation (all revoked at the double), ${t.expired} with their session's end; problems ${checkProblems.length}`,
  );
  console.log(`  cordon audit verify: exit ${audit.code}; broker exit on SIGTERM: ${brokerExit}`);
  console.log(
    `  broker log: ${logged.warnings} warnings, ${logged.errors} errors (and ${logged.other} lines of runtime notices)${logged.messages.map((m) => `\n    ${m.slice(0, 200)}`).join('')}`,
  );
  console.log(failures.length ? `\nFAIL\n${failures.map((f) => `  - ${f}`).join('\n')}` : '\nPASS');
  exitCode = failures.length ? 1 : 0;
} catch (e) {
  console.error(`soak: ${(e as Error).stack ?? String(e)}`);
  if (existsSync(brokerLog)) console.error(`broker log (last lines):\n${readFileSync(brokerLog, 'utf8').trimEnd().split('\n').slice(-15).join('\n')}`);
} finally {
  if (process.argv.includes('--keep')) console.log(`kept ${w.dir}`);
  await w.stop({ keep: process.argv.includes('--keep') }).catch(() => {});
}
process.exit(exitCode);
