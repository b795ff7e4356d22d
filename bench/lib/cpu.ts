import { readdirSync, readFileSync } from 'node:fs';

/** User+system CPU seconds a process has used so far, all threads (libuv pool included), from /proc. */
export function processCpuSec(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(f[11]);
    const stime = Number(f[12]);
    return (utime + stime) / 100; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

/** CPU-seconds the whole machine spent busy (all CPUs, everything but idle and iowait), from /proc/stat. */
export function machineBusySec(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return (user + nice + system + irq + softirq + steal) / 100;
  } catch {
    return undefined;
  }
}

/**
 * CPU-seconds per thread kind of a process: the main JS thread, the libuv pool (sqlite3 statements,
 * WebCrypto jobs), V8's helpers (GC, compiler), from /proc/<pid>/task/<tid>/stat.
 */
export function threadCpuSec(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const sec = (Number(f[11]) + Number(f[12])) / 100;
      const kind =
        tid === String(pid)
          ? 'main JS thread'
          : /libuv-worker/.test(comm)
            ? 'libuv pool (sqlite3, crypto jobs)'
            : /^V8/.test(comm)
              ? 'V8 helpers (GC, compiler)'
              : comm;
      out[kind] = (out[kind] ?? 0) + sec;
    } catch {
      /* thread gone */
    }
  }
  return out;
}

export function diffThreads(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b)) out[k] = Math.round(((b[k] ?? 0) - (a[k] ?? 0)) * 100) / 100;
  return out;
}

/** CPU-seconds used so far by every process with this command name (e.g. PostgreSQL's backends, `postgres`), from /proc. */
export function commandCpuSec(comm: string): number {
  let sum = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== comm) continue;
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      sum += (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      /* process gone */
    }
  }
  return sum;
}
