/**
 * The gateway part of `cordon status`: traffic per upstream in the last hour, from the audit log
 * (whichever process served it), and what the serving gateway has open right now, from its
 * `/healthz` at CORDON_GATEWAY_URL: open calls and tunnels live only in that process's memory.
 */
import type { Broker } from '../broker.ts';
import { auditRows } from '../store/audit.ts';
import { errorLine, iso, table, type Io, type style } from './output.ts';

const WINDOW_MS = 3_600_000;

interface Traffic {
  name: string;
  total: number;
  allowed: number;
  refused: number;
}

export interface GatewayStatus {
  url: string;
  since: number;
  upstreams: Traffic[];
  egress: Traffic[];
  /** Refusals before anyone was known (no token, a forged one): audited per client address, not per upstream. */
  anonymousRefusals: number;
  /** Why the traffic could not be counted (a database error), when it could not. */
  trafficError?: string;
  /** What the gateway has open, or why it could not be asked. */
  open: { calls: number; tunnels: number; upstreams?: Record<string, number> } | { unreachable: string };
}

export async function gatewayStatus(b: Broker, now: number): Promise<GatewayStatus> {
  const since = now - WINDOW_MS;
  const [traffic, open] = await Promise.all([
    auditRows.gatewayTraffic(b.read, since).then(
      (rows) => ({ rows }),
      (e: unknown) => ({ error: errorLine(e) }),
    ),
    openAtGateway(b.config.gatewayUrl, b.config.metricsToken),
  ]);
  // An MCP upstream's tool calls are its traffic, as reverse-mode calls are an HTTP upstream's.
  const tally = (events: ReadonlyArray<'gateway.call' | 'mcp.call' | 'egress.connect'>): Traffic[] => {
    const by = new Map<string, Traffic>();
    for (const r of 'rows' in traffic ? traffic.rows : []) {
      if (r.event === 'deny' || !events.includes(r.event)) continue;
      const t = by.get(r.name) ?? { name: r.name, total: 0, allowed: 0, refused: 0 };
      t.total += r.count;
      if (r.decision === 'allow') t.allowed += r.count;
      else if (r.decision === 'deny') t.refused += r.count;
      by.set(r.name, t);
    }
    return [...by.values()].sort((x, y) => y.total - x.total || (x.name < y.name ? -1 : 1));
  };
  return {
    url: b.config.gatewayUrl,
    since,
    upstreams: tally(['gateway.call', 'mcp.call']),
    egress: tally(['egress.connect']),
    anonymousRefusals: ('rows' in traffic ? traffic.rows : [])
      .filter((r) => r.event === 'deny' && (r.name === 'gateway.call' || r.name === 'egress.connect' || r.name === 'mcp.call'))
      .reduce((n, r) => n + r.count, 0),
    ...('error' in traffic ? { trafficError: traffic.error } : {}),
    open,
  };
}

/** The gateway's `/healthz`; with CORDON_METRICS_TOKEN when set, so it also names the upstreams of its open calls. */
async function openAtGateway(url: string, token: string | undefined): Promise<GatewayStatus['open']> {
  try {
    const res = await fetch(`${url}/healthz`, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(2000) });
    const body = (await res.json()) as { ok?: unknown; open?: { calls?: unknown; tunnels?: unknown; upstreams?: unknown } };
    const o = body?.open;
    if (!res.ok || body.ok !== true || typeof o?.calls !== 'number' || typeof o.tunnels !== 'number')
      return { unreachable: `${url}/healthz answered ${res.status} without the gateway's open counts` };
    const upstreams = o.upstreams && typeof o.upstreams === 'object' ? (o.upstreams as Record<string, number>) : undefined;
    return { calls: o.calls, tunnels: o.tunnels, ...(upstreams ? { upstreams } : {}) };
  } catch (e) {
    const err = e as { name?: string; cause?: { code?: string } };
    const why = err.name === 'TimeoutError' ? 'no answer within 2 s' : (err.cause?.code ?? errorLine(e));
    return { unreachable: why };
  }
}

export function gatewayStatusJson(s: GatewayStatus): Record<string, unknown> {
  const row = (t: Traffic) => ({ calls: t.total, allowed: t.allowed, refused: t.refused });
  return {
    url: s.url,
    since: iso(s.since),
    upstreams: s.upstreams.map((t) => ({ upstream: t.name, ...row(t) })),
    egress: s.egress.map((t) => ({ host: t.name, ...row(t) })),
    anonymous_refusals: s.anonymousRefusals,
    ...(s.trafficError ? { traffic_error: s.trafficError } : {}),
    reachable: !('unreachable' in s.open),
    open: 'unreachable' in s.open ? null : s.open,
    ...('unreachable' in s.open ? { unreachable: s.open.unreachable } : {}),
  };
}

export async function printGatewayStatus(io: Io, st: ReturnType<typeof style>, s: GatewayStatus): Promise<void> {
  await io.out(`\n${st.bold('Gateway (traffic in the last hour, from the audit log)')}\n`);
  const open = 'unreachable' in s.open ? undefined : s.open;
  if (s.trafficError) await io.out(st.yellow(`  could not count gateway traffic: ${s.trafficError}\n`));
  else if (!s.upstreams.length && !s.egress.length && !s.anonymousRefusals) await io.out('  (no calls)\n');
  if (s.upstreams.length)
    await io.out(
      table(
        ['UPSTREAM', 'CALLS', 'ALLOWED', 'REFUSED', ...(open?.upstreams ? ['OPEN NOW'] : [])],
        s.upstreams.map((t) => [t.name, t.total, t.allowed, t.refused, ...(open?.upstreams ? [open.upstreams[t.name] ?? 0] : [])]),
      ),
    );
  if (s.egress.length)
    await io.out(
      table(
        ['EGRESS HOST', 'CONNECTS', 'ALLOWED', 'REFUSED'],
        s.egress.map((t) => [t.name, t.total, t.allowed, t.refused]),
      ),
    );
  if (s.anonymousRefusals) await io.out(`  refused before any agent was known (no token, a forged one): ${s.anonymousRefusals}\n`);
  if (open) await io.out(`  open now at ${s.url}: ${open.calls} call(s), ${open.tunnels} tunnel(s)\n`);
  else if ('unreachable' in s.open) await io.out(st.yellow(`  gateway not reachable at ${s.url} (${s.open.unreachable}): open calls and tunnels unknown\n`));
}
