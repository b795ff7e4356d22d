import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { closeBroker } from '../../src/broker.ts';
import { registerAgent } from '../../src/agents/registry.ts';
import { basic, openLocal, postForm, ROOT, startBrokerProcess, type BenchEnv, type BrokerProcess } from './broker-proc.ts';
import { startAuxServer, startVaultDouble, type AuxServer, type VaultDoubleProcess } from './extras.ts';
import { load, warm, type LoadResult, type LoadSpec } from './load.ts';
import { printSummary, summarise, type ProfileSummary } from './profile.ts';

/**
 * The gateway scenario (issue 11, "Speed"): reverse mode `/u/bench/…` with a valid token and an
 * Authorization header injected from a Vault KV credential, audit on, beside its floors measured
 * in the same run — a bare node:http proxy to the same upstream, and the upstream called directly.
 *
 * Four processes: this one (autocannon), the upstream (bench/calibrate-server.ts, which refuses any
 * call without the injected header, so a 200 proves the injection), the proxy floor
 * (bench/proxy-floor.ts) and `node bin/cordon.js serve` with CORDON_GATEWAY_PORT, the Vault double
 * behind its provider. Then a second, CPU-profiled gateway run says where the time goes.
 */

export const GATEWAY_FILE = join(ROOT, 'src', 'gateway', 'server.ts');
/** Where the SigV4 re-signing micro-bench lives (another helper's): it exports `sigv4Bench(): Promise<{ medianMs: number }>`. */
export const SIGV4_BENCH_FILE = join(ROOT, 'bench', 'lib', 'sigv4.ts');
export const hasGateway = (): boolean => existsSync(GATEWAY_FILE);

const API_KEY = 'bench-KEY-0123456789abcdef';
const INJECTED = `Bearer ${API_KEY}`;
const CALL = '/u/bench/items/42';
/** Share of the proxy floor's maximum offered at a fixed rate for the latency comparison. */
const RATE_SHARE = 0.6;

export const TARGETS = { throughputRatio: 0.5, addedP50Ms: 1, addedP99Ms: 5, sigv4MedianMs: 0.5 };

/** Policy for the bench agent: one upstream, one rule, a Vault KV credential injected as a header. */
const policyYaml = (upstreamUrl: string): string => `
name: bench-gateway
description: Calls the bench upstream through the gateway.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:bench]
credentials:
  bench-key: { provider: vault, path: secret/data/bench/api, ttl: 10m }
upstreams:
  bench:
    url: ${upstreamUrl}/api
    credential: bench-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    timeout: 5s
    rules:
      read: { methods: [GET], paths: ["/**"] }
`;

export type Proc = Pick<BrokerProcess, 'child' | 'url' | 'how' | 'stop'>;
export type Measure = (
  proc: Proc,
  id: string,
  spec: LoadSpec,
  target: string,
  ok: (r: LoadResult) => boolean,
  note?: string,
) => Promise<LoadResult & { met: boolean }>;

export interface ComparisonRow {
  what: string;
  gateway?: number;
  floor?: number;
  /** gateway ÷ floor. */
  ratio?: number;
  target: string;
  /** Undefined for a figure with no target of its own (information) or one not measured yet. */
  met?: boolean;
  info?: boolean;
  note?: string;
}

export interface GatewayBench {
  offeredRate: number;
  rows: ComparisonRow[];
  /** Vault calls while the gateway served every measured request (the credential is cached per session). */
  vaultCallsDuringLoad: number;
  sigv4?: { medianMs: number } | { pending: string };
  profile?: { file: string; summary: ProfileSummary };
}

export const asProc = (s: AuxServer, how: string): Proc => ({ child: s.child, url: s.url, how, stop: async () => null });

export async function putKv(vault: VaultDoubleProcess, path: string, data: Record<string, string>): Promise<void> {
  const r = await fetch(`${vault.url}/v1/secret/data/${path}`, {
    method: 'POST',
    headers: { 'x-vault-token': vault.rootToken, 'content-type': 'application/json' },
    body: JSON.stringify({ data }),
  });
  if (!r.ok) throw new Error(`Vault double KV write failed: ${r.status} ${await r.text()}`);
}

export async function waitFor(url: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer within ${ms / 1000} s`);
}

/** The broker + gateway process on the bench database, with the gateway policy dir and the Vault double behind it. */
async function startGatewayBroker(be: BenchEnv, vault: VaultDoubleProcess, nodeArgs: string[] = []): Promise<BrokerProcess> {
  const broker = await startBrokerProcess(be, {
    nodeArgs,
    extraEnv: { VAULT_ADDR: vault.url, VAULT_TOKEN: vault.rootToken, CORDON_VAULT_ALLOW_ROOT: '1' },
  });
  await waitFor(`${be.env.CORDON_GATEWAY_URL}/healthz`);
  return broker;
}

/** The SigV4 re-signing median, from the micro-bench another helper adds as bench/lib/sigv4.ts. */
async function sigv4Median(): Promise<GatewayBench['sigv4']> {
  if (!existsSync(SIGV4_BENCH_FILE)) return { pending: 'bench/lib/sigv4.ts (SigV4 re-signing micro-bench) does not exist yet' };
  try {
    const mod = await import(pathToFileURL(SIGV4_BENCH_FILE).href);
    const r = (await mod.sigv4Bench()) as { medianMs: number };
    return { medianMs: r.medianMs };
  } catch (e) {
    return { pending: `bench/lib/sigv4.ts failed: ${(e as Error).message}` };
  }
}

export async function gatewayScenarios(
  be: BenchEnv,
  opts: { measure: Measure; connections: number; durationSec: number; profileDir: string },
): Promise<GatewayBench> {
  const { measure, connections, durationSec } = opts;
  const base = { connections, durationSec, method: 'GET' as const, body: '' };
  const vault = await startVaultDouble();
  const cleanups: Array<() => Promise<unknown>> = [() => vault.stop()];
  try {
    await putKv(vault, 'bench/api', { api_key: API_KEY });
    const upstream = await startAuxServer('calibrate-server.ts', [INJECTED]);
    cleanups.push(() => upstream.stop());
    const proxy = await startAuxServer('proxy-floor.ts', [`${upstream.url}/api`, INJECTED]);
    cleanups.push(() => proxy.stop());

    const { env: gbe, agent } = await policyAndAgent(be, 'bench-gateway', policyYaml(upstream.url), 'bench-gw');

    let broker = await startGatewayBroker(gbe, vault);
    cleanups.push(() => broker.stop());
    const gwUrl = gbe.env.CORDON_GATEWAY_URL;
    const t = await postForm(`${broker.url}/token`, { grant_type: 'client_credentials', scope: 'gw:bench' }, { authorization: basic(agent.id, agent.secret) });
    if (t.status !== 200) throw new Error(`gateway agent session start failed: ${t.status} ${JSON.stringify(t.body)}`);
    const bearer = { authorization: `Bearer ${t.body.access_token as string}` };
    const check = await fetch(`${gwUrl}${CALL}`, { headers: bearer });
    if (check.status !== 200) throw new Error(`gateway sanity call failed: ${check.status} ${(await check.text()).slice(0, 300)}`);
    await check.arrayBuffer();

    const spec = (name: string, url: string, headers: Record<string, string>, rate?: number): LoadSpec => ({ ...base, name, url, headers, rate });
    const gateway: Proc = broker;
    const floorMax = await measure(
      asProc(proxy, 'bench/proxy-floor.ts'),
      'floor: node:http proxy',
      spec('floor proxy', `${proxy.url}${CALL}`, {}),
      'ceiling of the gateway (target ≥ 0.5× this)',
      () => true,
      'bare node:http reverse proxy, keep-alive Agent, one static header injected; GET of a small JSON body',
    );
    const v0 = await vault.count();
    const gwMax = await measure(
      gateway,
      'gateway /u/bench (Vault KV header)',
      spec('gateway', `${gwUrl}${CALL}`, bearer),
      `≥ ${TARGETS.throughputRatio}× proxy floor; +p50 ≤ ${TARGETS.addedP50Ms} ms, +p99 ≤ ${TARGETS.addedP99Ms} ms`,
      (r) => r.requestsPerSec >= TARGETS.throughputRatio * floorMax.requestsPerSec,
      'GET /u/bench/… with a Bearer token: verify, live check, policy rule, Vault KV header (cached per session), undici forward, audit row',
    );

    // Latency at a load the floor holds comfortably: the same offered rate direct, through the floor, through the gateway.
    const rate = Math.max(100, Math.round((RATE_SHARE * floorMax.requestsPerSec) / 100) * 100);
    const direct = await measure(
      asProc(upstream, 'bench/calibrate-server.ts'),
      `floor: upstream direct @ ${rate}/s`,
      spec('direct', `${upstream.url}/api/items/42`, { authorization: INJECTED }, rate),
      'latency without a proxy',
      () => true,
      `fixed offered rate ${Math.round(RATE_SHARE * 100)} % of the proxy floor's maximum`,
    );
    const floorAt = await measure(
      asProc(proxy, 'bench/proxy-floor.ts'),
      `floor: node:http proxy @ ${rate}/s`,
      spec('floor proxy at rate', `${proxy.url}${CALL}`, {}, rate),
      'latency a bare proxy adds',
      () => true,
    );
    const gwAt = await measure(
      gateway,
      `gateway @ ${rate}/s`,
      spec('gateway at rate', `${gwUrl}${CALL}`, bearer, rate),
      `+p50 ≤ ${TARGETS.addedP50Ms} ms, +p99 ≤ ${TARGETS.addedP99Ms} ms over direct`,
      (r) => r.p50 - direct.p50 <= TARGETS.addedP50Ms && r.p99 - direct.p99 <= TARGETS.addedP99Ms,
    );
    const vaultCallsDuringLoad = (await vault.count()) - v0;

    const ratio = (g: number, f: number) => (f > 0 ? g / f : undefined);
    const tp: ComparisonRow = {
      what: 'throughput, req/s',
      gateway: gwMax.requestsPerSec,
      floor: floorMax.requestsPerSec,
      ratio: ratio(gwMax.requestsPerSec, floorMax.requestsPerSec),
      target: `≥ ${TARGETS.throughputRatio}× floor`,
    };
    tp.met = (tp.ratio ?? 0) >= TARGETS.throughputRatio && gwMax.errors === 0 && gwMax.non2xx === 0;
    const saturated = gwAt.requestsPerSec < 0.95 * rate;
    const added = (p: 'p50' | 'p99', limit: number): ComparisonRow => {
      const g = gwAt[p] - direct[p];
      const f = floorAt[p] - direct[p];
      return {
        what: `added ${p} over direct @ ${rate}/s, ms`,
        gateway: g,
        floor: f,
        ratio: ratio(g, f),
        target: `≤ ${limit} ms`,
        met: g <= limit && gwAt.errors === 0 && gwAt.non2xx === 0,
        note: `direct ${direct[p].toFixed(2)}, floor ${floorAt[p].toFixed(2)}, gateway ${gwAt[p].toFixed(2)} ms${saturated ? `; gateway saturated (${Math.round(gwAt.requestsPerSec)}/s of ${rate}/s): queueing` : ''}`,
      };
    };
    const cpu = (m: LoadResult & { brokerCpuUsPerReq?: number }) => m.brokerCpuUsPerReq;
    const rows: ComparisonRow[] = [
      tp,
      added('p50', TARGETS.addedP50Ms),
      added('p99', TARGETS.addedP99Ms),
      {
        what: 'server CPU per request at full load, µs',
        gateway: cpu(gwMax),
        floor: cpu(floorMax),
        ratio: ratio(cpu(gwMax) ?? NaN, cpu(floorMax) ?? NaN),
        target: '(where the time goes)',
        info: true,
        note: 'all threads of the server process (/proc)',
      },
    ];
    if (saturated) {
      // The target's rate queues at the gateway; say also what it adds at a load it holds (half its own maximum).
      const held = Math.max(100, Math.round(gwMax.requestsPerSec / 2 / 50) * 50);
      const d2 = await measure(
        asProc(upstream, 'bench/calibrate-server.ts'),
        `floor: upstream direct @ ${held}/s`,
        spec('direct, held', `${upstream.url}/api/items/42`, { authorization: INJECTED }, held),
        'latency without a proxy',
        () => true,
      );
      const g2 = await measure(gateway, `gateway @ ${held}/s`, spec('gateway, held', `${gwUrl}${CALL}`, bearer, held), '(information)', () => true);
      for (const p of ['p50', 'p99'] as const)
        rows.push({
          what: `added ${p} over direct @ ${held}/s (half the gateway's max), ms`,
          gateway: g2[p] - d2[p],
          target: '(information)',
          info: true,
          note: `direct ${d2[p].toFixed(2)}, gateway ${g2[p].toFixed(2)} ms; achieved ${Math.round(g2.requestsPerSec)}/s`,
        });
    }
    const sigv4 = await sigv4Median();
    rows.push(
      'medianMs' in sigv4!
        ? {
            what: 'SigV4 re-signing median, ms',
            gateway: sigv4.medianMs,
            target: `≤ ${TARGETS.sigv4MedianMs} ms`,
            met: sigv4.medianMs <= TARGETS.sigv4MedianMs,
          }
        : { what: 'SigV4 re-signing median, ms', target: `≤ ${TARGETS.sigv4MedianMs} ms`, note: sigv4!.pending },
    );
    gwMax.met = tp.met;
    gwAt.met = rows[1].met! && rows[2].met!;
    const out: GatewayBench = { offeredRate: rate, rows, vaultCallsDuringLoad, sigv4 };

    // Where the time goes: the same load at full speed on a fresh, CPU-profiled gateway process.
    await broker.stop();
    mkdirSync(opts.profileDir, { recursive: true });
    broker = await startGatewayBroker(gbe, vault, ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`, '--cpu-prof-interval=250']);
    const profSpec = spec('gateway (profiled)', `${gwUrl}${CALL}`, bearer);
    await warm(profSpec, 1);
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const profiled = await load({ ...profSpec, durationSec: Math.min(durationSec, 5) });
    const toUs = Number(process.hrtime.bigint() / 1000n);
    await broker.stop();
    // The busiest one under load: the process that gave up on `bin/cordon.js serve` and worker threads write profiles too.
    const found = readdirSync(opts.profileDir)
      .filter((x) => x.endsWith('.cpuprofile'))
      .map((x) => ({ file: join(opts.profileDir, x), summary: summarise(join(opts.profileDir, x), { fromUs, toUs }, 15) }))
      .sort((x, y) => y.summary.busyMs - x.summary.busyMs)[0];
    if (found) {
      const kept = join(ROOT, 'bench', 'profiles', 'gateway.cpuprofile');
      mkdirSync(join(ROOT, 'bench', 'profiles'), { recursive: true });
      copyFileSync(found.file, kept);
      console.log(`\ngateway CPU profile (${Math.round(profiled.requestsPerSec)}/s under the profiler, ${profiled.non2xx} non-2xx):`);
      printSummary(found.summary);
      console.log(`raw profile: ${kept}`);
      out.profile = { file: 'bench/profiles/gateway.cpuprofile', summary: found.summary };
    } else console.log('- gateway profile: the process wrote no CPU profile');
    return out;
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  }
}

const fmt = (n: number | undefined, d: number): string => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(d));

/** A comparison table: each figure beside its floor (or direct figure), with the ratio, the target and whether it is met. */
export function printComparison(title: string, floorName: string, comparison: ComparisonRow[]): void {
  const rows = [[title, 'gateway', floorName, 'ratio', 'target', 'met', '']];
  for (const r of comparison)
    rows.push([
      r.what,
      fmt(r.gateway, r.what.endsWith(', ms') ? 2 : 0),
      fmt(r.floor, r.what.endsWith(', ms') ? 2 : 0),
      r.ratio === undefined || !Number.isFinite(r.ratio) ? '–' : `${r.ratio.toFixed(2)}×`,
      r.target,
      r.info ? '' : r.met === undefined ? 'pending' : r.met ? 'yes' : 'NO',
      r.note ?? '',
    ]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log('');
  for (const [i, r] of rows.entries()) {
    console.log(r.map((c, j) => (j === 0 || j >= 4 ? c.padEnd(w[j]) : c.padStart(w[j]))).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
}

/** Each gateway figure beside its floor. */
export function printGateway(g: GatewayBench): void {
  printComparison('gateway vs floor', 'floor', g.rows);
  console.log(`  Vault calls during the measured gateway runs: ${g.vaultCallsDuringLoad} (the KV credential is cached per session)`);
}

/** The shipped policies plus one bench policy (`name`.yaml) in a directory of the bench's own, and an agent registered on it. */
export async function policyAndAgent(
  be: BenchEnv,
  name: string,
  yaml: string,
  agentName: string,
): Promise<{ env: BenchEnv; agent: { id: string; secret: string } }> {
  const policyDir = join(be.dir, `${name}-policies`);
  mkdirSync(policyDir, { recursive: true });
  for (const f of readdirSync(join(ROOT, 'policies'))) if (f.endsWith('.yaml')) copyFileSync(join(ROOT, 'policies', f), join(policyDir, f));
  writeFileSync(join(policyDir, `${name}.yaml`), yaml);
  const env: BenchEnv = { ...be, env: { ...be.env, CORDON_POLICY_DIR: policyDir } };
  const b = await openLocal(env.env);
  try {
    const r = await registerAgent(b, { name: agentName, policy: name, auth: 'secret', actor: 'bench' });
    return { env, agent: { id: r.agent.id, secret: r.clientSecret! } };
  } finally {
    await closeBroker(b);
  }
}
