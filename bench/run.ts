/**
 * `npm run bench`: Cordon's speed targets on this machine.
 *
 * The broker runs as `node bin/cordon.js serve` in its own process on a throw-away SQLite file
 * (shipped policies/), autocannon drives it from this process, and the in-process scenarios
 * (revocation, middleware) open the same database. Prints a table, then every target beside its
 * floor (bench/lib/targets.ts), and writes bench/results.json.
 *
 *   npm run bench                              all scenarios
 *   npm run bench -- --only=session,revoke     some of them (calibrate, floor, session, introspect, delegate, revoke, middleware, credentials, gateway, mcp, replicas)
 *   npm run bench -- --check                   exit non-zero when a target is missed (--no-explain: no profile of the misses)
 *   npm run bench -- --duration=5 --connections=20
 *   npm run bench -- --profile[=session]       CPU-profile the broker during one HTTP scenario and summarise where the time goes
 *   npm run bench -- --server=core               serve the broker core only (no request logging, metrics, credentials, sweeper)
 *   npm run bench -- --wait-quiet=120          first wait up to 120 s for other jobs on the machine to finish
 */
import { mkdirSync, readdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { closeBroker } from '../src/broker.ts';
import { TOKEN_TYPE_ACCESS, GRANT_TOKEN_EXCHANGE } from '../src/tokens/claims.ts';
import { prepare, startBrokerProcess, openLocal, basic, postForm, ROOT, type BenchEnv, type BrokerProcess } from './lib/broker-proc.ts';
import { load, warm, type LoadSpec, type LoadResult } from './lib/load.ts';
import { processCpuSec, machineBusySec, threadCpuSec, diffThreads } from './lib/cpu.ts';
import { revokeScenarios, type RevokeResult } from './lib/revoke.ts';
import {
  hasCredentials,
  hasMiddleware,
  middlewareBench,
  startCalibrationServer,
  startVaultDouble,
  type MiddlewareBench,
  type VaultDoubleProcess,
} from './lib/extras.ts';
import { summarise, printSummary } from './lib/profile.ts';
import { sessionStartBreakdown, printBreakdown, sqlPerDecision } from './lib/breakdown.ts';
import { gatewayScenarios, hasGateway, printGateway, type GatewayBench } from './lib/gateway.ts';
import { floorModes, floorScenarios, formHeaders } from './lib/floors.ts';
import { credentialScenario, type CredentialBench } from './lib/credentials.ts';
import { anyFailed, evaluateTargets, missedScenarios, printTargets, TARGET_TEXT, type TargetRow } from './lib/targets.ts';
import { explainMisses, type MissExplained } from './lib/explain.ts';
import { printReplicas, replicaScenarios, type ReplicaBench } from './lib/replicas.ts';
import { mcpScenarios, printMcp, type McpBench } from './lib/mcp.ts';

// ------------------------------------------------------------------------- options

const arg = (name: string): string | undefined => {
  const a = process.argv.find((x) => x === `--${name}` || x.startsWith(`--${name}=`));
  if (a === undefined) return undefined;
  return a.includes('=') ? a.slice(a.indexOf('=') + 1) : '';
};
const DURATION = Number(arg('duration') || 8);
const CONNECTIONS = Number(arg('connections') || 20);
/** `core`: the broker core alone (no request logging, metrics, credential routes, sweeper). */
const SERVER = arg('server') || 'cli';
if (SERVER !== 'cli' && SERVER !== 'core') throw new Error('--server must be cli or core');
const PROFILE = arg('profile') === undefined ? undefined : arg('profile') || 'session';
const ALL = ['calibrate', 'floor', 'session', 'introspect', 'delegate', 'revoke', 'middleware', 'credentials', 'gateway', 'mcp', 'replicas'];
const ONLY = new Set(PROFILE ? [PROFILE] : (arg('only')?.split(',') ?? ALL));
for (const o of ONLY) if (!ALL.includes(o)) throw new Error(`unknown scenario ${o} (known: ${ALL.join(', ')})`);
const CHECK = arg('check') !== undefined;
const EXPLAIN = arg('no-explain') === undefined;

// ------------------------------------------------------------------------- results

interface HttpScenario extends LoadResult {
  id: string;
  target: string;
  met: boolean;
  brokerCpuUsPerReq?: number;
  brokerCpuCores?: number;
  loadGenCpuCores?: number;
  /** CPU (in cores) used by processes other than the broker and this load generator during the run. */
  otherCpuCores?: number;
  /** Broker CPU-seconds during the run by thread kind. */
  brokerThreadsCpuSec?: Record<string, number>;
  /** The load window on the monotonic clock (to cut a broker CPU profile to it). */
  windowUs?: { fromUs: number; toUs: number };
  note?: string;
}

const results: {
  machine: Record<string, unknown>;
  settings: Record<string, unknown>;
  http: HttpScenario[];
  revocation: Array<RevokeResult & { target: string; met: boolean }>;
  middleware?: MiddlewareBench & { target: string; met?: boolean };
  credentials?: CredentialBench;
  gateway?: GatewayBench;
  replicas?: ReplicaBench;
  targets?: { rows: TargetRow[]; allMet: boolean; missedProfiles?: { file: string; scenarios: MissExplained[] } };
  mcp?: McpBench;
  skipped: Array<{ id: string; why: string }>;
  sqlPerDecision?: Record<string, { count: number; statements: string[] }>;
  profile?: unknown;
} = {
  machine: {
    loadAvgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memGiB: Math.round(totalmem() / 2 ** 30),
    platform: process.platform,
    at: new Date().toISOString(),
  },
  settings: {
    connections: CONNECTIONS,
    durationSec: DURATION,
    database: 'sqlite (temp file, WAL)',
    keyAlg: 'EdDSA',
    brokerProcess: 'node bin/cordon.js serve',
    logLevel: 'silent',
  },
  http: [],
  revocation: [],
  skipped: [],
};

const skip = (id: string, why: string) => {
  results.skipped.push({ id, why });
  console.log(`- ${id}: skipped (${why})`);
};

// ------------------------------------------------------------------------- helpers

/** What each measured scenario sent, to run it again under the profiler when it misses its target. */
const specs = new Map<string, LoadSpec>();

async function measure(
  broker: BrokerProcess,
  id: string,
  spec: LoadSpec,
  target: string,
  ok: (r: LoadResult) => boolean,
  note?: string,
): Promise<HttpScenario> {
  specs.set(id, spec);
  await warm(spec, 1);
  const pid = broker.child.pid!;
  const c0 = processCpuSec(pid);
  const t0 = threadCpuSec(pid);
  const m0 = machineBusySec();
  const s0 = process.cpuUsage();
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  const r = await load(spec);
  const toUs = Number(process.hrtime.bigint() / 1000n);
  const c1 = processCpuSec(pid);
  const threads = diffThreads(t0, threadCpuSec(pid));
  const m1 = machineBusySec();
  const sc = process.cpuUsage(s0);
  const cpu = c0 !== undefined && c1 !== undefined ? c1 - c0 : undefined;
  // CPU the rest of the machine used meanwhile (other jobs on this shared box): it skews the figures.
  const otherCores =
    cpu !== undefined && m0 !== undefined && m1 !== undefined ? Math.max(0, (m1 - m0 - cpu - (sc.user + sc.system) / 1e6) / r.durationSec) : undefined;
  const s: HttpScenario = {
    ...r,
    id,
    target,
    met: ok(r) && r.errors === 0 && r.non2xx === 0,
    brokerCpuUsPerReq: cpu !== undefined && r.total ? (cpu * 1e6) / r.total : undefined,
    brokerCpuCores: cpu !== undefined ? cpu / r.durationSec : undefined,
    loadGenCpuCores: (sc.user + sc.system) / 1e6 / r.durationSec,
    otherCpuCores: otherCores,
    brokerThreadsCpuSec: threads,
    windowUs: { fromUs, toUs },
    note,
  };
  results.http.push(s);
  console.log(
    `- ${id}: ${Math.round(s.requestsPerSec)}/s p50 ${s.p50.toFixed(2)} ms p99 ${s.p99.toFixed(2)} ms, errors ${s.errors}, non-2xx ${s.non2xx}${s.sampleFailure ? ` (e.g. ${s.sampleFailure})` : ''}`,
  );
  const th = Object.entries(threads)
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k} ${v.toFixed(2)} s`)
    .join(', ');
  if (th) console.log(`    server CPU over ${r.durationSec} s: ${th}`);
  return s;
}

async function sessionToken(be: BenchEnv, url: string, scope: string): Promise<string> {
  const r = await postForm(
    `${url}/token`,
    { grant_type: 'client_credentials', scope },
    { authorization: basic(be.agents.planner.id, be.agents.planner.secret) },
  );
  if (r.status !== 200) throw new Error(`session start failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.access_token as string;
}

// ------------------------------------------------------------------------- scenarios 1–3 (+5)

async function httpScenarios(be: BenchEnv, broker: BrokerProcess, vault: VaultDoubleProcess | undefined): Promise<void> {
  const url = broker.url;
  const planner = be.agents.planner;
  const base = { connections: CONNECTIONS, durationSec: DURATION };

  if (ONLY.has('calibrate')) {
    const cal = await startCalibrationServer();
    try {
      await measure(
        { child: cal.child, url: cal.url, how: 'bench/calibrate-server.ts', stop: async () => null },
        'calibration: bare node:http',
        { ...base, durationSec: Math.min(DURATION, 4), name: 'calibration', url: `${cal.url}/`, headers: formHeaders('Basic eDp5'), body: 'token=x' },
        'ceiling for the HTTP scenarios on this machine',
        () => true,
        'a node:http server answering a small JSON body: no framework, no database, no crypto',
      );
    } finally {
      await cal.stop();
    }
  }

  await floorScenarios(be, vault, { modes: floorModes(ONLY), measure, skip, connections: CONNECTIONS, durationSec: DURATION });

  if (ONLY.has('session')) {
    await measure(
      broker,
      'session start',
      {
        ...base,
        name: 'session start',
        url: `${url}/token`,
        headers: formHeaders(basic(planner.id, planner.secret)),
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'docs:read web:search' }).toString(),
      },
      TARGET_TEXT.session,
      () => true,
      'POST /token client_credentials, Basic auth; every request opens a new session (session + token + audit row)',
    );
  }

  if (ONLY.has('introspect')) {
    const token = await sessionToken(be, url, 'docs:read web:search');
    const rs = be.agents.introspector;
    const check = await postForm(`${url}/introspect`, { token }, { authorization: basic(rs.id, rs.secret) });
    if (check.status !== 200 || check.body.active !== true) throw new Error(`introspection sanity check failed: ${check.status} ${JSON.stringify(check.body)}`);
    await measure(
      broker,
      'introspection',
      {
        ...base,
        name: 'introspection',
        url: `${url}/introspect`,
        headers: formHeaders(basic(rs.id, rs.secret)),
        body: new URLSearchParams({ token }).toString(),
      },
      TARGET_TEXT.introspection,
      () => true,
      'POST /introspect of a live token, Basic auth by a resource-server agent',
    );
  }

  if (ONLY.has('delegate')) {
    const token = await sessionToken(be, url, 'docs:read web:search');
    const form = {
      grant_type: GRANT_TOKEN_EXCHANGE,
      subject_token: token,
      subject_token_type: TOKEN_TYPE_ACCESS,
      requested_actor: be.agents.reader.id,
      scope: 'docs:read',
    };
    const check = await postForm(`${url}/token`, form, { authorization: basic(planner.id, planner.secret) });
    if (check.status !== 200) throw new Error(`delegation sanity check failed: ${check.status} ${JSON.stringify(check.body)}`);
    await measure(
      broker,
      'delegation',
      { ...base, name: 'delegation', url: `${url}/token`, headers: formHeaders(basic(planner.id, planner.secret)), body: new URLSearchParams(form).toString() },
      TARGET_TEXT.delegation,
      () => true,
      'RFC 8693 exchange of one research-planner token for a doc-reader token (requested_actor), scope docs:read',
    );
  }

  if (ONLY.has('middleware')) {
    if (!hasMiddleware()) skip('middleware', 'src/sdk/middleware.ts does not exist yet');
    else {
      const token = await sessionToken(be, url, 'docs:read web:search');
      // Give the revocation feed something to hold: revoke 200 other tokens first.
      const b = await openLocal(be.env);
      let revoked: number;
      try {
        const jtis: string[] = [];
        for (let i = 0; i < 200; i++) jtis.push(await sessionToken(be, url, 'docs:read'));
        const { revokeByHolder } = await import('../src/revocation/revoke.ts');
        for (const t of jtis) await revokeByHolder(b, planner.id, t);
        revoked = jtis.length;
      } finally {
        await closeBroker(b);
      }
      const m = await middlewareBench(url, token, revoked, Math.min(DURATION, 4));
      const met = m.middleware ? m.middleware.opsPerCpuSec >= 7000 && (m.revocationCheckNs ?? Infinity) < 5000 : undefined;
      results.middleware = { ...m, target: '≥ 7,000 verifications/s on one core; revocation check < 5 µs', met };
      if (m.rawVerify) console.log(`- node:crypto Ed25519 verify alone: ${Math.round(m.rawVerify.opsPerCpuSec)}/CPU-s`);
      console.log(`- jose jwtVerify alone: ${Math.round(m.jose.opsPerSec)}/s wall, ${Math.round(m.jose.opsPerCpuSec)}/CPU-s`);
      if (m.verify) console.log(`- middleware verify(), cold: ${Math.round(m.verify.opsPerSec)}/s wall, ${Math.round(m.verify.opsPerCpuSec)}/CPU-s`);
      if (m.middleware)
        console.log(
          `- express middleware, cold (verifiedCacheSize 0): ${Math.round(m.middleware.opsPerSec)}/s wall, ${Math.round(m.middleware.opsPerCpuSec)}/CPU-s; ${m.overheadUs!.toFixed(1)} µs CPU/request over jose alone`,
        );
      if (m.middlewareCached)
        console.log(
          `- express middleware, cached (same token again): ${Math.round(m.middlewareCached.opsPerSec)}/s wall, ${Math.round(m.middlewareCached.opsPerCpuSec)}/CPU-s`,
        );
      if (m.revocationCheckNs !== undefined)
        console.log(`- revocation check: ${m.revocationCheckNs.toFixed(0)} ns per isRevoked() with ${m.revocationSetSize} entries in the set`);
      if (m.skipped) skip('middleware', m.skipped);
    }
  }

  if (ONLY.has('credentials')) {
    if (!hasCredentials()) skip('credentials', 'src/tokens/credentials.ts (or test/doubles/vault.ts) does not exist yet');
    else if (!vault) skip('credentials', 'the Vault double did not start');
    else
      results.credentials = await credentialScenario(url, await sessionToken(be, url, 'docs:read cred:docs-vault'), vault, {
        broker,
        measure,
        skip,
        connections: CONNECTIONS,
        durationSec: DURATION,
      });
  }
}

// ------------------------------------------------------------------------- output

/** Calibration and floors bound the scenarios; they have no target of their own. */
const isReference = (id: string): boolean => id.startsWith('calibration') || id.startsWith('floor');
const f = (n: number | undefined, d = 1) => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(d));

function printTable(): void {
  const rows: string[][] = [['scenario', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'errors', 'non-2xx', 'broker CPU µs/req', 'other load', 'target', 'met']];
  for (const s of results.http)
    rows.push([
      s.id,
      Math.round(s.requestsPerSec).toLocaleString('en'),
      f(s.p50, 2),
      f(s.p90, 2),
      f(s.p99, 2),
      String(s.errors),
      String(s.non2xx),
      f(s.brokerCpuUsPerReq, 0),
      s.otherCpuCores === undefined ? '–' : `${s.otherCpuCores.toFixed(2)} cores`,
      s.target,
      isReference(s.id) ? '' : s.met ? 'yes' : 'NO',
    ]);
  for (const r of results.revocation) rows.push([r.name, '', '', '', '', '', '', '', '', r.target, r.met ? 'yes' : 'NO']);
  const m = results.middleware;
  if (m?.middleware)
    rows.push([
      'middleware verify, cold (per CPU-s)',
      Math.round(m.middleware.opsPerCpuSec).toLocaleString('en'),
      '',
      '',
      '',
      '',
      '',
      f(1e6 / m.middleware.opsPerCpuSec, 0),
      '',
      '≥ 7,000/s on one core',
      m.middleware.opsPerCpuSec >= 7000 ? 'yes' : 'NO',
    ]);
  if (m?.middlewareCached)
    rows.push([
      'middleware, cached token (per CPU-s)',
      Math.round(m.middlewareCached.opsPerCpuSec).toLocaleString('en'),
      '',
      '',
      '',
      '',
      '',
      f(1e6 / m.middlewareCached.opsPerCpuSec, 0),
      '',
      '(a client reusing its token)',
      '',
    ]);
  if (m?.revocationCheckNs !== undefined)
    rows.push([
      `revocation check (${m.revocationSetSize} entries)`,
      '',
      '',
      '',
      '',
      '',
      '',
      f(m.revocationCheckNs / 1000, 3),
      '',
      '< 5 µs',
      m.revocationCheckNs < 5000 ? 'yes' : 'NO',
    ]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log('');
  for (const [i, r] of (rows.length > 1 ? rows : []).entries()) {
    console.log(r.map((c, j) => (j === 0 || j >= 9 ? c.padEnd(w[j]) : c.padStart(w[j]))).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
  for (const r of results.revocation)
    console.log(`  ${r.name}: ${r.revokeMs.toFixed(0)} ms wall (${r.revokedTokens} tokens revoked; setup ${r.setupMs.toFixed(0)} ms)`);
  for (const s of results.skipped) console.log(`  skipped ${s.id}: ${s.why}`);
  if (results.gateway) printGateway(results.gateway);
  if (results.mcp) printMcp(results.mcp);
}

// ------------------------------------------------------------------------- main

/** Waits (up to `maxSec`) until the rest of the machine uses less than `cores` of CPU over a second. */
async function waitQuiet(maxSec: number, cores = 0.3): Promise<number | undefined> {
  const end = Date.now() + maxSec * 1000;
  let busy: number | undefined;
  do {
    const a = machineBusySec();
    await new Promise((r) => setTimeout(r, 1000));
    const b = machineBusySec();
    busy = a !== undefined && b !== undefined ? b - a : undefined;
    if (busy === undefined || busy < cores) return busy;
  } while (Date.now() < end);
  return busy;
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const quiet = Number(arg('wait-quiet') || 0);
  if (quiet > 0) {
    const busy = await waitQuiet(quiet);
    results.machine.otherCpuCoresAtStart = busy;
    console.log(
      busy !== undefined && busy >= 0.3 ? `machine still busy after ${quiet} s (${busy.toFixed(2)} cores in use); running anyway` : 'machine is quiet',
    );
  }
  const la = loadavg()[0];
  if (la > 0.7)
    console.log(
      `note: load average is ${la.toFixed(2)} before starting — other jobs share these ${cpus().length} CPUs and will depress the figures (see "other load")`,
    );
  console.log(
    `cordon bench: ${cpus().length} CPUs, node ${process.version}, ${CONNECTIONS} connections, ${DURATION} s per HTTP scenario${PROFILE ? `, profiling ${PROFILE}` : ''}`,
  );
  const be = await prepare();
  const profDir = join(be.dir, 'prof');
  let vault: VaultDoubleProcess | undefined;
  try {
    const needsHttp = ['calibrate', 'floor', 'session', 'introspect', 'delegate', 'middleware', 'credentials'].some((s) => ONLY.has(s));
    if (needsHttp) {
      let extraEnv: Record<string, string> | undefined;
      if ((ONLY.has('credentials') || ONLY.has('floor')) && hasCredentials()) {
        try {
          vault = await startVaultDouble();
          // The bench measures issuing, not the Vault setup: the double's root token, accepted explicitly.
          extraEnv = { VAULT_ADDR: vault.url, VAULT_TOKEN: vault.rootToken, CORDON_VAULT_ALLOW_ROOT: '1' };
        } catch (e) {
          console.log(`  (Vault double failed to start: ${(e as Error).message})`);
        }
      }
      mkdirSync(profDir, { recursive: true });
      const broker = await startBrokerProcess(be, {
        core: SERVER === 'core',
        extraEnv,
        nodeArgs: PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=250'] : [],
      });
      results.settings.brokerProcess = broker.how;
      try {
        await httpScenarios(be, broker, vault);
      } finally {
        await broker.stop();
      }
      // A missed target comes with the profile that explains it (not under --profile, which is one already).
      const missed = missedScenarios(evaluateTargets(results)).map((id) => ({ id, spec: specs.get(id)! }));
      if (!PROFILE && EXPLAIN && missed.length)
        try {
          const p = await explainMisses(be, missed, { extraEnv, core: SERVER === 'core', durationSec: DURATION, profileDir: join(be.dir, 'targets-prof') });
          if (p) results.targets = { rows: [], allMet: false, missedProfiles: p };
        } catch (e) {
          console.log(`- profiling the missed targets failed: ${(e as Error).message}`);
        }
    }

    if (!PROFILE) {
      const b = await openLocal(be.env);
      try {
        results.sqlPerDecision = await sqlPerDecision(b, be.agents.planner.id, be.agents.reader.id);
        console.log(
          `- SQL statements per decision (in-process, warm; HTTP client auth reads from memory): ${Object.entries(results.sqlPerDecision)
            .map(([k, v]) => `${k} ${v.count}`)
            .join(', ')}`,
        );
      } catch (e) {
        console.log(`- SQL statement count failed: ${(e as Error).message}`);
      } finally {
        await closeBroker(b);
      }
    }

    if (ONLY.has('revoke')) {
      const b = await openLocal(be.env);
      try {
        for (const r of await revokeScenarios(b, be.agents.planner.id, be.agents.reader.id, 10_000)) {
          results.revocation.push({ ...r, target: '< 1 s', met: r.revokeMs < 1000 });
          console.log(`- ${r.name}: ${r.revokeMs.toFixed(0)} ms`);
        }
      } finally {
        await closeBroker(b);
      }
    }

    // The gateway runs its own broker process (policies with an upstream, the Vault double behind it) and profiles itself.
    if (ONLY.has('gateway')) {
      if (!hasGateway()) skip('gateway', 'src/gateway/server.ts does not exist yet');
      else
        try {
          results.gateway = await gatewayScenarios(be, { measure, connections: CONNECTIONS, durationSec: DURATION, profileDir: join(be.dir, 'gateway-prof') });
        } catch (e) {
          skip('gateway', `failed: ${(e as Error).message}`);
        }
    }

    // MCP tools/call through the gateway beside the same MCP server called directly (its own broker, server and Vault double).
    if (ONLY.has('mcp'))
      results.mcp = await mcpScenarios(be, { measure, connections: CONNECTIONS, durationSec: DURATION }).catch(
        (e: Error) => void skip('mcp', `failed: ${e.message}`),
      );

    if (ONLY.has('replicas'))
      try {
        results.replicas = await replicaScenarios(be, { connections: CONNECTIONS, durationSec: DURATION });
      } catch (e) {
        skip('replicas', `failed: ${(e as Error).message}`);
      }

    if (PROFILE && PROFILE !== 'gateway') {
      const files = readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile'));
      if (!files.length) throw new Error('the broker wrote no CPU profile');
      const out = join(ROOT, 'bench', 'profiles');
      mkdirSync(out, { recursive: true });
      const kept = join(out, `${PROFILE}.cpuprofile`);
      copyFileSync(join(profDir, files[0]), kept);
      const window = results.http.find((h) => !isReference(h.id))?.windowUs;
      const summary = summarise(kept, window);
      printSummary(summary);
      if (PROFILE === 'session') {
        const b = await openLocal(be.env);
        try {
          const d = await sessionStartBreakdown(b, be.agents.planner.id);
          printBreakdown(d);
          results.profile = { scenario: PROFILE, file: 'bench/profiles/session.cpuprofile', summary, breakdown: d };
        } finally {
          await closeBroker(b);
        }
      } else results.profile = { scenario: PROFILE, file: `bench/profiles/${PROFILE}.cpuprofile`, summary };
      console.log(`\nraw profile: ${kept} (open in Chrome DevTools → Performance, or speedscope)`);
    }
  } finally {
    await vault?.stop();
    be.cleanup();
  }
  const targets = evaluateTargets(results);
  for (const h of results.http) {
    const own = targets.filter((t) => t.scenario === h.id && !t.info);
    if (own.length) h.met = own.every((t) => t.met === true);
  }
  results.targets = { ...results.targets, rows: targets, allMet: !anyFailed(targets) };
  printTable();
  if (results.replicas) printReplicas(results.replicas);
  printTargets(targets);
  // bench/results.json is the record of a full run with the real server; anything else goes beside it (git-ignored).
  const partial = arg('only') !== undefined || arg('duration') !== undefined || arg('connections') !== undefined;
  const file = join(
    ROOT,
    'bench',
    PROFILE
      ? `profile-${PROFILE}${SERVER === 'core' ? '-core' : ''}.json`
      : SERVER === 'core'
        ? 'results-core.json'
        : partial
          ? 'results-partial.json'
          : 'results.json',
  );
  writeFileSync(file, `${JSON.stringify({ ...results, elapsedSec: Math.round((Date.now() - t0) / 1000) }, null, 2)}\n`);
  console.log(`\nwrote ${file} (${Math.round((Date.now() - t0) / 1000)} s)`);
  if (CHECK && anyFailed(targets)) {
    console.log('--check: a target was missed');
    process.exitCode = 1;
  }
}

await main();
