import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { closeBroker } from '../../src/broker.ts';
import { basic, freePort, openLocal, postForm, ROOT, startBrokerProcess, TSX, type BenchEnv } from './broker-proc.ts';
import { processCpuSec } from './cpu.ts';
import { startVaultDouble } from './extras.ts';
import { policyAndAgent, printComparison, putKv, waitFor, type ComparisonRow, type Measure, type Proc } from './gateway.ts';
import type { LoadResult, LoadSpec } from './load.ts';

/**
 * The MCP scenario (issue 12, "Speed"): `tools/call` of a trivial tool (`get_ticket`, a map
 * lookup) of the example's tickets MCP server (examples/mcp/tickets-server.ts: the official SDK,
 * `createMcpHandler`, one McpServer per request) through the gateway's `/mcp/{upstream}` — token
 * check, policy and scope, argument globs, pin state, `X-Api-Key` injected from a Vault KV
 * credential, undici forward, one `mcp.call` audit row — and directly against the same server
 * process, in one run. The server refuses a call without the key, so a 2xx through the gateway
 * proves the injection; after the runs the audit is read to show that no call was refused or
 * answered with a JSON-RPC error (those come back as HTTP 200).
 *
 * Protocol 2026-07-28 (stateless: each POST is a whole exchange, JSON answer) is the measured one:
 * as fast as answered (rate), at half the slower one's maximum (added p50) and with one connection
 * (added latency with no queueing); 2025-11-25 without a session (SSE answer) at full speed for
 * information.
 */

export const MCP_TARGETS = { throughputRatio: 0.5, addedP50Ms: 2 };
const SERVER_FILE = join(ROOT, 'examples', 'mcp', 'tickets-server.ts');
const API_KEY = 'bench-MCP-KEY-0123456789';
const UPSTREAM = 'bench-mcp';
const TOOL = 'get_ticket';

const policyYaml = (serverUrl: string): string => `
name: bench-mcp
description: Calls one tool of the bench MCP server through the gateway.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:${UPSTREAM}/${TOOL}]
credentials:
  bench-mcp-key: { provider: vault, kv: secret/data/bench/mcp, ttl: 10m, deliver: gateway }
upstreams:
  ${UPSTREAM}:
    kind: mcp
    url: ${serverUrl}
    credential: bench-mcp-key
    inject: { header: X-Api-Key, value: "{secret.api_key}" }
    timeout: 5s
    tools: [${TOOL}]
    args: { ${TOOL}: { id: "T-*" } }
`;

/** One tools/call exchange of a protocol revision: its body and headers (the caller's credential added per path). */
function exchange(revision: '2026-07-28' | '2025-11-25'): { body: string; headers: Record<string, string> } {
  const modern = revision === '2026-07-28';
  const meta = {
    'io.modelcontextprotocol/protocolVersion': revision,
    'io.modelcontextprotocol/clientInfo': { name: 'bench', version: '1.0.0' },
    'io.modelcontextprotocol/clientCapabilities': {},
  };
  const params = { name: TOOL, arguments: { id: 'T-1001' }, ...(modern ? { _meta: meta } : {}) };
  return {
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': revision,
      ...(modern ? { 'mcp-method': 'tools/call', 'mcp-name': TOOL } : {}),
    },
  };
}

/** The example server in its own process, quiet (no line per tool run). */
async function startTicketsServer(): Promise<Proc & { child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', TSX, SERVER_FILE], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, PORT: String(port), TICKETS_API_KEY: API_KEY, QUIET: '1', NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /listening on (\S+)/.exec(buf);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`tickets-server.ts exited with ${code}: ${stderr.trim()}`)));
    setTimeout(() => reject(new Error('tickets-server.ts did not start within 15 s')), 15_000).unref();
  });
  return {
    child,
    url,
    how: 'node --import tsx examples/mcp/tickets-server.ts',
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise<number | null>((r) => child.once('exit', r));
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** One call, checked: 200 and the ticket in the answer (a JSON-RPC error would also be a 200). */
async function sanity(what: string, url: string, x: { body: string; headers: Record<string, string> }): Promise<void> {
  const r = await fetch(url, { method: 'POST', headers: x.headers, body: x.body });
  const text = await r.text();
  if (r.status !== 200 || !text.includes('Export to CSV')) throw new Error(`${what}: ${r.status} ${text.slice(0, 300)}`);
}

export interface McpBench {
  revision: string;
  offeredRate: number;
  rows: ComparisonRow[];
  /** mcp.call rows of the bench session after the runs, by outcome. */
  auditRows: { allowed: number; denied: number; jsonRpcErrors: number };
  vaultCallsDuringLoad: number;
}

export async function mcpScenarios(be: BenchEnv, opts: { measure: Measure; connections: number; durationSec: number }): Promise<McpBench> {
  const { measure, connections, durationSec } = opts;
  const vault = await startVaultDouble();
  const cleanups: Array<() => Promise<unknown>> = [() => vault.stop()];
  try {
    await putKv(vault, 'bench/mcp', { api_key: API_KEY });
    const server = await startTicketsServer();
    cleanups.push(() => server.stop());

    const { env: mbe, agent } = await policyAndAgent(be, 'bench-mcp', policyYaml(server.url), 'bench-mcp');
    const broker = await startBrokerProcess(mbe, { extraEnv: { VAULT_ADDR: vault.url, VAULT_TOKEN: vault.rootToken, CORDON_VAULT_ALLOW_ROOT: '1' } });
    cleanups.push(() => broker.stop());
    await waitFor(`${mbe.env.CORDON_GATEWAY_URL}/healthz`);
    const gwUrl = `${mbe.env.CORDON_GATEWAY_URL}/mcp/${UPSTREAM}`;
    const t = await postForm(
      `${broker.url}/token`,
      { grant_type: 'client_credentials', scope: `gw:${UPSTREAM}/${TOOL}` },
      { authorization: basic(agent.id, agent.secret) },
    );
    if (t.status !== 200) throw new Error(`MCP agent session start failed: ${t.status} ${JSON.stringify(t.body)}`);
    const sid = t.body.sid as string;
    const bearer = { authorization: `Bearer ${t.body.access_token as string}` };
    const direct = { 'x-api-key': API_KEY };

    const modern = exchange('2026-07-28');
    const legacy = exchange('2025-11-25');
    // The first call through the gateway lists the upstream's tools and pins them; the rest find the pin.
    for (const [what, url, x, auth] of [
      ['direct 2026-07-28', server.url, modern, direct],
      ['gateway 2026-07-28', gwUrl, modern, bearer],
      ['direct 2025-11-25', server.url, legacy, direct],
      ['gateway 2025-11-25', gwUrl, legacy, bearer],
    ] as const)
      await sanity(`MCP sanity call ${what}`, url, { body: x.body, headers: { ...x.headers, ...auth } });

    const spec = (name: string, url: string, x: { body: string; headers: Record<string, string> }, auth: Record<string, string>, rate?: number): LoadSpec => ({
      name,
      url,
      body: x.body,
      headers: { ...x.headers, ...auth },
      method: 'POST',
      connections,
      durationSec,
      rate,
    });
    const all = () => true;
    const v0 = await vault.count();
    const dMax = await measure(
      server,
      'mcp: server direct',
      spec('mcp direct', server.url, modern, direct),
      'ceiling of the gateway (target ≥ 0.5× this)',
      all,
      'tools/call get_ticket, 2026-07-28, X-Api-Key sent by the client',
    );
    // The MCP server's own CPU while the gateway drives it (measure() watches the gateway process).
    const serverCpu0 = processCpuSec(server.child.pid!);
    const gMax = await measure(
      broker,
      'mcp: gateway /mcp/bench-mcp',
      spec('mcp gateway', gwUrl, modern, bearer),
      `≥ ${MCP_TARGETS.throughputRatio}× direct`,
      (r) => r.requestsPerSec >= MCP_TARGETS.throughputRatio * dMax.requestsPerSec,
      'token, policy + scope + args glob, pin, X-Api-Key from Vault KV (cached per session), undici forward, mcp.call audit row',
    );
    const serverCpu1 = processCpuSec(server.child.pid!);
    const serverUsPerCallViaGateway =
      serverCpu0 !== undefined && serverCpu1 !== undefined && gMax.total ? ((serverCpu1 - serverCpu0) * 1e6) / gMax.total : undefined;
    // Latency at a rate both hold without queueing: half the slower one's maximum.
    const rate = Math.max(50, Math.round(Math.min(dMax.requestsPerSec, gMax.requestsPerSec) / 2 / 50) * 50);
    const dAt = await measure(
      server,
      `mcp: server direct @ ${rate}/s`,
      spec('mcp direct at rate', server.url, modern, direct, rate),
      'latency without the gateway',
      all,
    );
    const gAt = await measure(
      broker,
      `mcp: gateway @ ${rate}/s`,
      spec('mcp gateway at rate', gwUrl, modern, bearer, rate),
      `+p50 ≤ ${MCP_TARGETS.addedP50Ms} ms over direct`,
      (r) => r.p50 - dAt.p50 <= MCP_TARGETS.addedP50Ms,
    );
    // One caller at a time: what the gateway adds to a call with no queueing anywhere.
    const one = (x: LoadSpec): LoadSpec => ({ ...x, connections: 1 });
    const dOne = await measure(server, 'mcp: server direct, 1 connection', one(spec('mcp direct c1', server.url, modern, direct)), '(information)', all);
    const gOne = await measure(broker, 'mcp: gateway, 1 connection', one(spec('mcp gateway c1', gwUrl, modern, bearer)), '(information)', all);
    const dOld = await measure(
      server,
      'mcp: server direct, 2025-11-25',
      spec('mcp direct legacy', server.url, legacy, direct),
      '(information)',
      all,
      'no session, SSE answer',
    );
    const gOld = await measure(
      broker,
      'mcp: gateway, 2025-11-25',
      spec('mcp gateway legacy', gwUrl, legacy, bearer),
      '(information)',
      all,
      'no session, SSE answer',
    );
    const vaultCallsDuringLoad = (await vault.count()) - v0;

    const clean = (...rs: LoadResult[]) => rs.every((r) => r.errors === 0 && r.non2xx === 0);
    const ratio = gMax.requestsPerSec / dMax.requestsPerSec;
    const cpu = (m: LoadResult & { brokerCpuUsPerReq?: number }) => m.brokerCpuUsPerReq;
    const rows: ComparisonRow[] = [
      {
        what: 'tools/call rate, req/s',
        gateway: gMax.requestsPerSec,
        floor: dMax.requestsPerSec,
        ratio,
        target: `≥ ${MCP_TARGETS.throughputRatio}× direct`,
        met: ratio >= MCP_TARGETS.throughputRatio && clean(gMax, dMax),
      },
      ...(['p50', 'p99'] as const).map((p): ComparisonRow => ({
        what: `${p} @ ${rate}/s, ms`,
        gateway: gAt[p],
        floor: dAt[p],
        target: p === 'p50' ? `+≤ ${MCP_TARGETS.addedP50Ms} ms` : '(information)',
        ...(p === 'p50' ? { met: gAt.p50 - dAt.p50 <= MCP_TARGETS.addedP50Ms && clean(gAt, dAt) } : { info: true }),
        note: `added ${(gAt[p] - dAt[p]).toFixed(2)} ms; achieved ${Math.round(dAt.requestsPerSec)}/s direct, ${Math.round(gAt.requestsPerSec)}/s gateway`,
      })),
      ...(['p50', 'p99'] as const).map((p): ComparisonRow => ({
        what: `${p} with 1 connection, ms`,
        gateway: gOne[p],
        floor: dOne[p],
        target: '(information)',
        info: true,
        note: `added ${(gOne[p] - dOne[p]).toFixed(2)} ms; ${Math.round(dOne.requestsPerSec)}/s direct, ${Math.round(gOne.requestsPerSec)}/s gateway`,
      })),
      {
        what: 'server CPU per call at full load, µs',
        gateway: cpu(gMax),
        floor: cpu(dMax),
        ratio: (cpu(gMax) ?? NaN) / (cpu(dMax) ?? NaN),
        target: '(where the time goes)',
        info: true,
        note: 'gateway process (broker + gateway) vs the MCP server process',
      },
      {
        what: 'MCP server CPU per call at full load, µs',
        gateway: serverUsPerCallViaGateway,
        floor: cpu(dMax),
        ratio: (serverUsPerCallViaGateway ?? NaN) / (cpu(dMax) ?? NaN),
        target: '(information)',
        info: true,
        note: 'the server process, called through the gateway vs by autocannon directly',
      },
      {
        what: 'tools/call rate 2025-11-25 (SSE), req/s',
        gateway: gOld.requestsPerSec,
        floor: dOld.requestsPerSec,
        ratio: gOld.requestsPerSec / dOld.requestsPerSec,
        target: '(information)',
        info: true,
        note: `p50 direct ${dOld.p50.toFixed(2)}, gateway ${gOld.p50.toFixed(2)} ms at full load`,
      },
    ];
    gMax.met = rows[0].met!;
    gAt.met = rows[1].met!;

    // Every call through the gateway was allowed and answered: a refusal or JSON-RPC error would have been a 200 too.
    await broker.stop();
    const b = await openLocal(mbe.env);
    let auditRows: McpBench['auditRows'];
    try {
      const q = () => b.db('audit').where({ sid, event: 'mcp.call' });
      const n = async (qb: ReturnType<typeof q>) => Number(((await qb.count('* as n').first()) as { n: number | string } | undefined)?.n ?? 0);
      auditRows = {
        allowed: await n(q().where({ decision: 'allow' })),
        denied: await n(q().where({ decision: 'deny' })),
        jsonRpcErrors: await n(q().where('params', 'like', '%"outcome":"error"%')),
      };
    } finally {
      await closeBroker(b);
    }
    if (auditRows.denied || auditRows.jsonRpcErrors) for (const r of rows) if (!r.info) r.met = false;
    return { revision: '2026-07-28', offeredRate: rate, rows, auditRows, vaultCallsDuringLoad };
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  }
}

/** Each MCP figure beside the direct one. */
export function printMcp(m: McpBench): void {
  printComparison('MCP tools/call: gateway vs direct', 'direct', m.rows);
  const a = m.auditRows;
  console.log(
    `  mcp.call rows of the bench session: ${a.allowed} allowed, ${a.denied} refused, ${a.jsonRpcErrors} JSON-RPC errors; Vault calls during the runs: ${m.vaultCallsDuringLoad}`,
  );
}
