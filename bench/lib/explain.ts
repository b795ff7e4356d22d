import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startBrokerProcess, type BenchEnv } from './broker-proc.ts';
import { load, warm, type LoadSpec } from './load.ts';
import { printSummary, summarise, type ProfileSummary } from './profile.ts';

/**
 * When a target is missed, say where the broker's time goes: a fresh broker process under
 * `--cpu-prof` runs each missed scenario again at full load (5 s), and the profile is cut to each
 * scenario's load window. The raw profile is kept as bench/profiles/targets.cpuprofile.
 */

export interface MissExplained {
  scenario: string;
  requestsPerSec: number;
  summary: ProfileSummary;
}

export async function explainMisses(
  be: BenchEnv,
  missed: Array<{ id: string; spec: LoadSpec }>,
  opts: { extraEnv?: Record<string, string>; core?: boolean; durationSec: number; profileDir: string },
): Promise<{ file: string; scenarios: MissExplained[] } | undefined> {
  if (!missed.length) return undefined;
  mkdirSync(opts.profileDir, { recursive: true });
  console.log(`\nprofiling the broker for the missed targets (${missed.map((m) => m.id).join(', ')})…`);
  const broker = await startBrokerProcess(be, {
    core: opts.core,
    extraEnv: opts.extraEnv,
    nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`, '--cpu-prof-interval=250'],
  });
  const windows: Array<{ id: string; rps: number; window: { fromUs: number; toUs: number } }> = [];
  try {
    for (const m of missed) {
      await warm(m.spec, 1);
      const fromUs = Number(process.hrtime.bigint() / 1000n);
      const r = await load({ ...m.spec, durationSec: Math.min(opts.durationSec, 5) });
      windows.push({ id: m.id, rps: r.requestsPerSec, window: { fromUs, toUs: Number(process.hrtime.bigint() / 1000n) } });
    }
  } finally {
    await broker.stop();
  }
  // The busiest profile under load: worker threads and a process that gave up write profiles too.
  const files = readdirSync(opts.profileDir)
    .filter((x) => x.endsWith('.cpuprofile'))
    .map((x) => join(opts.profileDir, x));
  const busy = (f: string) => windows.reduce((s, w) => s + summarise(f, w.window, 1).busyMs, 0);
  const file = files.map((f) => ({ f, busy: busy(f) })).sort((x, y) => y.busy - x.busy)[0]?.f;
  if (!file) {
    console.log('- the profiled broker wrote no CPU profile');
    return undefined;
  }
  const kept = join(ROOT, 'bench', 'profiles', 'targets.cpuprofile');
  mkdirSync(join(ROOT, 'bench', 'profiles'), { recursive: true });
  copyFileSync(file, kept);
  const scenarios = windows.map((w) => ({ scenario: w.id, requestsPerSec: w.rps, summary: summarise(file, w.window, 12) }));
  for (const s of scenarios) {
    console.log(`\nwhy "${s.scenario}" missed its target: the broker's main thread at ${Math.round(s.requestsPerSec)}/s under the profiler`);
    printSummary(s.summary);
  }
  console.log(`\nraw profile: ${kept} (the main thread only: sqlite3 statements and WebCrypto jobs run on the libuv pool, see the per-thread CPU above)`);
  return { file: 'bench/profiles/targets.cpuprofile', scenarios };
}
