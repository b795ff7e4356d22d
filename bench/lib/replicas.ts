import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import knexFactory from 'knex';
import { closeBroker } from '../../src/broker.ts';
import { basic, freePort, openLocal, postForm, registerBenchAgents, startBrokerProcess, type BenchEnv, type BrokerProcess } from './broker-proc.ts';
import { commandCpuSec, machineBusySec, processCpuSec } from './cpu.ts';
import { formHeaders } from './floors.ts';
import { load, warm, type LoadSpec } from './load.ts';

/**
 * Replicas (issue 13, item 4): two `cordon serve` processes on one fresh PostgreSQL database, one
 * issuer and one key, driven by a round-robin client (autocannon spreads its connections over both
 * URLs, as an L4 balancer would). Session start and introspection with 1 then 2 replicas, then how
 * fast a revocation on A reaches B: revoke on A over HTTP while B's introspection is polled.
 *
 * The database is made on the local server (CORDON_BENCH_PG, else CORDON_TEST_PG, else the tests'
 * postgres://postgres@127.0.0.1:5432/test as maintenance database) and dropped afterwards.
 */

const ADMIN_URL = process.env.CORDON_BENCH_PG ?? process.env.CORDON_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
export const PROPAGATION_TRIES = 100;
/** A try that has not seen B refuse within this long counts as this long (and fails the target). */
const PROPAGATION_DEADLINE_MS = 5000;

export interface ReplicaRun {
  scenario: string;
  replicas: 1 | 2;
  requestsPerSec: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
  /** All threads of every replica process (/proc), per request. */
  brokerCpuUsPerReq?: number;
  /** PostgreSQL's processes (all `postgres` backends on the machine), in cores. */
  postgresCores: number;
  /** CPU of everything else meanwhile (other jobs on the machine; not PostgreSQL, the replicas or the load generator), in cores. */
  otherCores?: number;
  sampleFailure?: string;
}

export interface Propagation {
  tries: number;
  /** From the revoke request's start on A to B's first `active: false`. */
  medianMs: number;
  p90Ms: number;
  maxMs: number;
  /** A's /revoke round trip (its commit is inside it). */
  revokeMedianMs: number;
  /** From A's answer to B's first refusal (0 when B refused first): a lower bound of the lag after the commit. */
  afterAnswerMedianMs: number;
  afterAnswerMaxMs: number;
  /** Polls of B per try until it refused. */
  pollsMedian: number;
  /** Tries where B still answered active after A's /revoke had returned. */
  staleAfterRevokeReturned: number;
}

export interface ReplicaBench {
  database: string;
  rows: ReplicaRun[];
  propagation?: Propagation;
}

const pick = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];

async function withAdmin<T>(f: (k: knexFactory.Knex) => Promise<T>): Promise<T> {
  const k = knexFactory({ client: 'pg', connection: ADMIN_URL, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 5000 });
  try {
    return await f(k);
  } finally {
    await k.destroy();
  }
}

async function freshDatabase(): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  const name = `cordon_bench_${randomBytes(6).toString('hex')}`;
  await withAdmin((k) => k.raw(`CREATE DATABASE ${name}`));
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return { url: u.toString(), name, drop: () => withAdmin((k) => k.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined) };
}

async function run(scenario: string, replicas: BrokerProcess[], spec: LoadSpec): Promise<ReplicaRun> {
  await warm(spec, 1);
  const pids = replicas.map((r) => r.child.pid!);
  const cpu = (): number | undefined => {
    const each = pids.map(processCpuSec);
    return each.includes(undefined) ? undefined : (each as number[]).reduce((x, y) => x + y, 0);
  };
  const c0 = cpu();
  const m0 = machineBusySec();
  const pg0 = commandCpuSec('postgres');
  const s0 = process.cpuUsage();
  const r = await load(spec);
  const c1 = cpu();
  const pg = commandCpuSec('postgres') - pg0;
  const m1 = machineBusySec();
  const sc = process.cpuUsage(s0);
  const used = c0 !== undefined && c1 !== undefined ? c1 - c0 : undefined;
  const row: ReplicaRun = {
    scenario,
    replicas: replicas.length as 1 | 2,
    requestsPerSec: r.requestsPerSec,
    p50: r.p50,
    p99: r.p99,
    errors: r.errors,
    non2xx: r.non2xx,
    brokerCpuUsPerReq: used !== undefined && r.total ? (used * 1e6) / r.total : undefined,
    postgresCores: pg / r.durationSec,
    otherCores:
      used !== undefined && m0 !== undefined && m1 !== undefined ? Math.max(0, (m1 - m0 - used - pg - (sc.user + sc.system) / 1e6) / r.durationSec) : undefined,
    sampleFailure: r.sampleFailure,
  };
  console.log(
    `- ${scenario}, ${row.replicas} replica${row.replicas > 1 ? 's' : ''}: ${Math.round(row.requestsPerSec)}/s p50 ${row.p50.toFixed(2)} ms p99 ${row.p99.toFixed(2)} ms, errors ${row.errors}, non-2xx ${row.non2xx}${row.sampleFailure ? ` (e.g. ${row.sampleFailure})` : ''}`,
  );
  return row;
}

async function introspectActive(url: string, auth: string, token: string): Promise<boolean> {
  const r = await postForm(`${url}/introspect`, { token }, { authorization: auth });
  if (r.status !== 200) throw new Error(`introspection on ${url} answered ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.active === true;
}

/** Revoke on A (RFC 7009, by the holder) while B's introspection is polled back to back until it refuses. */
async function propagation(a: string, b: string, planner: string, rs: string, tries: number): Promise<Propagation> {
  const times: number[] = [];
  const revokes: number[] = [];
  const lags: number[] = [];
  const polls: number[] = [];
  let stale = 0;
  for (let i = 0; i < tries; i++) {
    const t = await postForm(`${a}/token`, { grant_type: 'client_credentials', scope: 'docs:read' }, { authorization: planner });
    if (t.status !== 200) throw new Error(`session start on A failed: ${t.status} ${JSON.stringify(t.body)}`);
    const token = t.body.access_token as string;
    if (!(await introspectActive(b, rs, token))) throw new Error('B does not see a fresh token from A as active');
    const t0 = performance.now();
    let returned: number | undefined;
    const revoked = postForm(`${a}/revoke`, { token }, { authorization: planner }).then((r) => {
      if (r.status !== 200) throw new Error(`revoke on A answered ${r.status} ${JSON.stringify(r.body)}`);
      returned = performance.now() - t0;
    });
    let n = 0;
    let seen: number | undefined;
    let activeAfterReturn = false;
    while (seen === undefined) {
      const doneBefore = returned !== undefined;
      const active = await introspectActive(b, rs, token);
      n++;
      const at = performance.now() - t0;
      if (!active) seen = at;
      else if (doneBefore) activeAfterReturn = true;
      if (at > PROPAGATION_DEADLINE_MS) seen = at;
    }
    await revoked;
    times.push(seen);
    revokes.push(returned!);
    lags.push(Math.max(0, seen - returned!));
    polls.push(n);
    if (activeAfterReturn) stale++;
  }
  const s = [...times].sort((x, y) => x - y);
  return {
    tries,
    medianMs: pick(s, 50),
    p90Ms: pick(s, 90),
    maxMs: s[s.length - 1],
    revokeMedianMs: pick(
      [...revokes].sort((x, y) => x - y),
      50,
    ),
    afterAnswerMedianMs: pick(
      [...lags].sort((x, y) => x - y),
      50,
    ),
    afterAnswerMaxMs: Math.max(...lags),
    pollsMedian: pick(
      [...polls].sort((x, y) => x - y),
      50,
    ),
    staleAfterRevokeReturned: stale,
  };
}

export async function replicaScenarios(be: BenchEnv, opts: { connections: number; durationSec: number }): Promise<ReplicaBench> {
  const db = await freshDatabase();
  const out: ReplicaBench = { database: `PostgreSQL ${new URL(ADMIN_URL).host}, fresh database ${db.name}`, rows: [] };
  const started: BrokerProcess[] = [];
  try {
    // One issuer (A's URL) and one key directory for both, as replicas behind a balancer share them.
    const env = {
      ...be.env,
      DATABASE_URL: db.url,
      CORDON_KEY_DIR: join(be.dir, 'replica-keys'),
      CORDON_AUDIT_DIR: join(be.dir, 'replica-audit'),
      CORDON_GATEWAY_PORT: 'off',
    };
    const b0 = await openLocal(env);
    let agents: BenchEnv['agents'];
    try {
      agents = await registerBenchAgents(b0);
    } finally {
      await closeBroker(b0);
    }
    const portB = await freePort();
    const beA: BenchEnv = { ...be, env, agents };
    const beB: BenchEnv = { ...beA, port: portB, issuer: `http://127.0.0.1:${portB}`, env: { ...env, PORT: String(portB) } };
    const a = await startBrokerProcess(beA);
    started.push(a);

    const planner = basic(agents.planner.id, agents.planner.secret);
    const rs = basic(agents.introspector.id, agents.introspector.secret);
    const t = await postForm(`${a.url}/token`, { grant_type: 'client_credentials', scope: 'docs:read web:search' }, { authorization: planner });
    if (t.status !== 200) throw new Error(`session start on A failed: ${t.status} ${JSON.stringify(t.body)}`);
    const token = t.body.access_token as string;
    const base = { connections: opts.connections, durationSec: opts.durationSec };
    const session = (urls: string[]): LoadSpec => ({
      ...base,
      name: 'replicas session start',
      url: urls.map((u) => `${u}/token`) as unknown as string, // autocannon deals connections round-robin over a list
      headers: formHeaders(planner),
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'docs:read web:search' }).toString(),
    });
    const introspection = (urls: string[]): LoadSpec => ({
      ...base,
      name: 'replicas introspection',
      url: urls.map((u) => `${u}/introspect`) as unknown as string,
      headers: formHeaders(rs),
      body: new URLSearchParams({ token }).toString(),
    });
    const rows = out.rows;
    rows.push(await run('session start', [a], session([a.url])));
    rows.push(await run('introspection', [a], introspection([a.url])));
    // B starts after A has made the signing key, and finds it.
    const b = await startBrokerProcess(beB);
    started.push(b);
    if (!(await introspectActive(b.url, rs, token))) throw new Error('B does not see A’s token as active');
    rows.push(await run('session start', [a, b], session([a.url, b.url])));
    rows.push(await run('introspection', [a, b], introspection([a.url, b.url])));
    out.propagation = await propagation(a.url, b.url, planner, rs, PROPAGATION_TRIES);
    const p = out.propagation;
    console.log(
      `- revocation on A → B's introspection refuses: median ${p.medianMs.toFixed(1)} ms, p90 ${p.p90Ms.toFixed(1)} ms, max ${p.maxMs.toFixed(1)} ms from the /revoke request's start over ${p.tries} tries (A's /revoke ${p.revokeMedianMs.toFixed(1)} ms median; ${p.pollsMedian} polls of B; after A answered: median ${p.afterAnswerMedianMs.toFixed(1)} ms, max ${p.afterAnswerMaxMs.toFixed(1)} ms, ${p.staleAfterRevokeReturned} tries saw B still active)`,
    );
    return out;
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    await db.drop().catch((e) => console.log(`  (could not drop ${db.name}: ${(e as Error).message})`));
  }
}

const fmt = (n: number | undefined, d: number): string => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(d));

export function printReplicas(r: ReplicaBench): void {
  console.log(`\nreplicas (${r.database}; round-robin over connections):`);
  const rows = [['scenario', 'replicas', 'req/s', '× 1 replica', 'p50 ms', 'p99 ms', 'errors', 'non-2xx', 'broker CPU µs/req', 'PostgreSQL', 'other load']];
  for (const x of r.rows) {
    const one = r.rows.find((y) => y.scenario === x.scenario && y.replicas === 1);
    rows.push([
      x.scenario,
      String(x.replicas),
      Math.round(x.requestsPerSec).toLocaleString('en'),
      one ? `${(x.requestsPerSec / one.requestsPerSec).toFixed(2)}×` : '–',
      fmt(x.p50, 2),
      fmt(x.p99, 2),
      String(x.errors),
      String(x.non2xx),
      fmt(x.brokerCpuUsPerReq, 0),
      `${x.postgresCores.toFixed(2)} cores`,
      x.otherCores === undefined ? '–' : `${x.otherCores.toFixed(2)} cores`,
    ]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const [i, row] of rows.entries()) {
    console.log(row.map((c, j) => (j === 0 ? c.padEnd(w[j]) : c.padStart(w[j]))).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
  const p = r.propagation;
  if (p)
    console.log(
      `  revocation A → B (${p.tries} tries), from the /revoke request's start to B's first active:false: median ${p.medianMs.toFixed(1)} ms, p90 ${p.p90Ms.toFixed(1)} ms, max ${p.maxMs.toFixed(1)} ms; A's /revoke itself ${p.revokeMedianMs.toFixed(1)} ms median; after A answered: median ${p.afterAnswerMedianMs.toFixed(1)} ms, max ${p.afterAnswerMaxMs.toFixed(1)} ms`,
    );
}
