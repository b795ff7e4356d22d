import autocannon from 'autocannon';

export interface LoadResult {
  name: string;
  requestsPerSec: number;
  total: number;
  p50: number; // ms
  p90: number;
  p99: number;
  max: number;
  errors: number; // connection errors and timeouts
  non2xx: number;
  statuses: Record<string, number>;
  connections: number;
  durationSec: number;
  /** A sample non-2xx body, to say why requests failed. */
  sampleFailure?: string;
}

export interface LoadSpec {
  name: string;
  url: string;
  headers: Record<string, string>;
  body: string;
  /** Default POST. */
  method?: 'GET' | 'POST';
  connections?: number;
  durationSec?: number;
  /** Fixed offered load (autocannon `overallRate`, requests/s over all connections); default as fast as answered. */
  rate?: number;
}

const pct = (sorted: Float64Array, p: number): number => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : NaN);

/**
 * One autocannon run. Latency percentiles are computed here from every response's hrtime
 * (autocannon's own histogram rounds to whole milliseconds, too coarse at these latencies).
 */
export async function load(spec: LoadSpec): Promise<LoadResult> {
  const connections = spec.connections ?? 20;
  const durationSec = spec.durationSec ?? 8;
  const times: number[] = [];
  const statuses: Record<string, number> = {};
  let sampleFailure: string | undefined;
  const r = await new Promise<autocannon.Result>((resolve, reject) => {
    const inst = autocannon(
      {
        url: spec.url,
        method: spec.method ?? 'POST',
        headers: spec.headers,
        body: spec.method === 'GET' ? undefined : spec.body,
        connections,
        duration: durationSec,
        ...(spec.rate ? { overallRate: spec.rate } : {}),
        timeout: 10,
        requests: [
          {
            onResponse: (status: number, body: string) => {
              if ((status < 200 || status > 299) && sampleFailure === undefined) sampleFailure = `${status} ${String(body).slice(0, 300)}`;
            },
          },
        ],
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    inst.on('response', (_c, status, _bytes, ms) => {
      times.push(ms);
      statuses[status] = (statuses[status] ?? 0) + 1;
    });
  });
  const sorted = Float64Array.from(times).sort();
  return {
    name: spec.name,
    requestsPerSec: r.requests.total / (r.duration || durationSec),
    total: r.requests.total,
    p50: pct(sorted, 50),
    p90: pct(sorted, 90),
    p99: pct(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    statuses,
    connections,
    durationSec,
    sampleFailure,
  };
}

/** A short untimed run so the JIT, the SQLite page cache and keep-alive sockets are warm. */
export async function warm(spec: LoadSpec, seconds = 1): Promise<void> {
  await autocannon({
    url: spec.url,
    method: spec.method ?? 'POST',
    headers: spec.headers,
    body: spec.method === 'GET' ? undefined : spec.body,
    connections: spec.connections ?? 20,
    duration: seconds,
    ...(spec.rate ? { overallRate: spec.rate } : {}),
  });
}
