import { FLOOR_IDS } from './floors.ts';
import type { GatewayBench } from './gateway.ts';
import type { LoadResult } from './load.ts';
import type { ReplicaBench } from './replicas.ts';

/**
 * Issue 13's speed targets: each a ratio to a floor measured in the same run, so a figure means
 * the same on a fast day and a slow one. The summary table ends the bench output, goes to
 * results.json (`targets`) and decides `--check`'s exit code.
 */

export const TARGETS = {
  sessionRatio: 0.6,
  sessionP99Ratio: 3,
  delegationRatio: 0.5,
  introspectionRatio: 0.8,
  credentialRatio: 0.5,
  credentialOverheadMs: 2,
  /** Issue 13 item 1: a revocation is honoured on every PostgreSQL replica within this. */
  propagationMaxMs: 100,
};

/** The HTTP scenarios' ids in results.http (run.ts measures them under these names). */
export const SCENARIO_IDS = {
  session: 'session start',
  delegation: 'delegation',
  introspection: 'introspection',
  credentials: 'credential issue (Vault child token)',
} as const;

/** What each scenario's row in the main table says its target is. */
export const TARGET_TEXT = {
  session: `≥ ${TARGETS.sessionRatio}× /token + signature floor, p99 ≤ ${TARGETS.sessionP99Ratio}× its p99`,
  delegation: `≥ ${TARGETS.delegationRatio}× /token + signature floor`,
  introspection: `≥ ${TARGETS.introspectionRatio}× introspection floor (no database)`,
  credentials: `≥ ${TARGETS.credentialRatio}× credential floor; overhead ≤ ${TARGETS.credentialOverheadMs} ms median over the double`,
};

export interface TargetRow {
  /** The results.http id (or `gateway`, `replicas`) the figure belongs to. */
  scenario: string;
  figure: string;
  value?: number;
  floorName?: string;
  floor?: number;
  /** value ÷ floor. */
  ratio?: number;
  target: string;
  /** Undefined: not decidable (its floor was not measured) or information only. */
  met?: boolean;
  info?: boolean;
  note?: string;
}

type Http = Pick<LoadResult, 'requestsPerSec' | 'p99' | 'errors' | 'non2xx'> & { id: string };

export interface TargetInput {
  http: Http[];
  credentials?: { brokerOverheadP50Ms?: number; oneConnection?: { doubleP50?: number; brokerP50?: number; vaultCallsPerIssue?: number } };
  gateway?: GatewayBench;
  replicas?: ReplicaBench;
}

const failures = (s: Http): string | undefined => (s.errors || s.non2xx ? `${s.errors} errors, ${s.non2xx} non-2xx` : undefined);

export function evaluateTargets(input: TargetInput): TargetRow[] {
  const rows: TargetRow[] = [];
  const byId = (id: string) => input.http.find((h) => h.id === id);
  const ratioRow = (scenarioId: string, floorId: string, min: number, what: string): void => {
    const s = byId(scenarioId);
    if (!s) return;
    const f = byId(floorId);
    const bad = failures(s);
    const ratio = f ? s.requestsPerSec / f.requestsPerSec : undefined;
    rows.push({
      scenario: scenarioId,
      figure: `${what}, req/s`,
      value: s.requestsPerSec,
      floorName: floorId,
      floor: f?.requestsPerSec,
      ratio,
      target: `≥ ${min}×`,
      met: bad ? false : ratio === undefined ? undefined : ratio >= min,
      note: bad ?? (f ? undefined : 'floor not measured'),
    });
  };

  ratioRow(SCENARIO_IDS.session, FLOOR_IDS.sign, TARGETS.sessionRatio, 'session start');
  const session = byId(SCENARIO_IDS.session);
  if (session) {
    const f = byId(FLOOR_IDS.sign);
    const ratio = f ? session.p99 / f.p99 : undefined;
    rows.push({
      scenario: SCENARIO_IDS.session,
      figure: 'session start p99, ms',
      value: session.p99,
      floorName: FLOOR_IDS.sign,
      floor: f?.p99,
      ratio,
      target: `≤ ${TARGETS.sessionP99Ratio}×`,
      met: ratio === undefined ? undefined : ratio <= TARGETS.sessionP99Ratio,
      note: f ? undefined : 'floor not measured',
    });
  }
  ratioRow(SCENARIO_IDS.delegation, FLOOR_IDS.sign, TARGETS.delegationRatio, 'delegation');
  ratioRow(SCENARIO_IDS.introspection, FLOOR_IDS.introspect, TARGETS.introspectionRatio, 'introspection');
  ratioRow(SCENARIO_IDS.credentials, FLOOR_IDS.credentials, TARGETS.credentialRatio, 'credential issue');
  const c = input.credentials;
  const calls = c?.oneConnection?.vaultCallsPerIssue ?? 1;
  if (byId(SCENARIO_IDS.credentials) && c?.brokerOverheadP50Ms !== undefined)
    rows.push({
      scenario: SCENARIO_IDS.credentials,
      figure: 'credential issue: broker overhead, median ms',
      value: c.brokerOverheadP50Ms,
      floorName: `the Vault double's own time: ${calls} call${calls === 1 ? '' : 's'} × its p50, 1 connection`,
      floor: c.oneConnection?.doubleP50 !== undefined ? calls * c.oneConnection.doubleP50 : undefined,
      target: `≤ ${TARGETS.credentialOverheadMs} ms`,
      met: c.brokerOverheadP50Ms <= TARGETS.credentialOverheadMs,
      note: c.oneConnection?.brokerP50 !== undefined ? `broker p50 ${c.oneConnection.brokerP50.toFixed(2)} ms, one request at a time` : undefined,
    });

  // The gateway's own targets (issue 11), from its comparison table.
  for (const g of input.gateway?.rows ?? [])
    if (!g.info)
      rows.push({
        scenario: 'gateway',
        figure: `gateway ${g.what}`,
        value: g.gateway,
        floorName: g.what.startsWith('throughput') ? 'floor: node:http proxy' : g.floor !== undefined ? 'added by the node:http proxy' : undefined,
        floor: g.floor,
        ratio: g.ratio,
        target: g.target,
        met: g.met,
        note: g.note,
      });

  const r = input.replicas;
  if (r?.propagation)
    rows.push({
      scenario: 'replicas',
      figure: 'revocation A → replica B, max ms',
      value: r.propagation.maxMs,
      target: `≤ ${TARGETS.propagationMaxMs} ms`,
      met: r.propagation.maxMs <= TARGETS.propagationMaxMs,
      note: `from the /revoke request's start (A's own round trip included: ${r.propagation.revokeMedianMs.toFixed(1)} ms median); median ${r.propagation.medianMs.toFixed(1)} ms over ${r.propagation.tries} tries; after A answered max ${r.propagation.afterAnswerMaxMs.toFixed(1)} ms`,
    });
  for (const scenario of ['session start', 'introspection']) {
    const one = r?.rows.find((x) => x.scenario === scenario && x.replicas === 1);
    const two = r?.rows.find((x) => x.scenario === scenario && x.replicas === 2);
    if (one && two)
      rows.push({
        scenario: 'replicas',
        figure: `${scenario}, 2 replicas on PostgreSQL, req/s`,
        value: two.requestsPerSec,
        floorName: '1 replica',
        floor: one.requestsPerSec,
        ratio: two.requestsPerSec / one.requestsPerSec,
        target: '(information: 2 cores)',
        info: true,
      });
  }
  return rows;
}

/** The HTTP scenarios (results.http ids) with a missed target: the ones a profile should explain. */
export function missedScenarios(rows: TargetRow[]): string[] {
  const http = new Set<string>(Object.values(SCENARIO_IDS));
  return [...new Set(rows.filter((r) => r.met === false && http.has(r.scenario)).map((r) => r.scenario))];
}

export const anyFailed = (rows: TargetRow[]): boolean => rows.some((r) => !r.info && r.met === false);

const fmt = (n: number | undefined, unitMs: boolean): string =>
  n === undefined || !Number.isFinite(n) ? '–' : unitMs ? n.toFixed(2) : Math.round(n).toLocaleString('en');

export function printTargets(rows: TargetRow[]): void {
  console.log('\ntargets (each figure beside its floor, measured in this run):');
  if (!rows.length) {
    console.log('  (no scenario with a target ran)');
    return;
  }
  const table = [['figure', 'cordon', 'floor', 'ratio', 'target', 'met', 'floor is']];
  for (const r of rows) {
    const ms = r.figure.endsWith(' ms');
    table.push([
      r.figure,
      fmt(r.value, ms),
      fmt(r.floor, ms),
      r.ratio === undefined ? '–' : `${r.ratio.toFixed(2)}×`,
      r.target,
      r.info ? '' : r.met === undefined ? 'pending' : r.met ? 'yes' : 'NO',
      [r.floorName, r.note].filter(Boolean).join('; '),
    ]);
  }
  const w = table[0].map((_, i) => Math.max(...table.map((t) => t[i].length)));
  for (const [i, t] of table.entries()) {
    console.log(t.map((c, j) => (j === 0 || j >= 4 ? c.padEnd(w[j]) : c.padStart(w[j]))).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
  const decided = rows.filter((r) => !r.info && r.met !== undefined);
  console.log(`  ${decided.filter((r) => r.met).length} of ${decided.length} targets met`);
}
