import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { loadConfig, type Config } from '../../src/config/index.ts';
import { openBroker, closeBroker, type Broker } from '../../src/broker.ts';
import { registerAgent } from '../../src/agents/registry.ts';

export const ROOT = resolve(import.meta.dirname, '..', '..');
/** tsx's loader by URL, so a child started in another directory still finds it. */
export const TSX = import.meta.resolve('tsx');

export interface Agents {
  /** research-planner: session start and the delegating parent. */
  planner: { id: string; secret: string };
  /** doc-reader: the delegation target (requested_actor). */
  reader: { id: string; secret: string };
  /** A second doc-reader used as the resource server that introspects. */
  introspector: { id: string; secret: string };
}

export interface BenchEnv {
  dir: string;
  port: number;
  issuer: string;
  env: Record<string, string>;
  agents: Agents;
  cleanup(): void;
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

/** Opens a broker in this process on the bench database (for setup and in-process scenarios). */
export async function openLocal(env: Record<string, string>): Promise<Broker> {
  return openBroker(loadConfig(env), { log: pino({ level: 'silent' }) });
}

export function configOf(env: Record<string, string>): Config {
  return loadConfig(env);
}

/**
 * A throw-away SQLite database and key directory with the shipped policies, and three agents
 * registered in-process (the CLI has no `agent register` yet) before the server process starts.
 */
export async function prepare(): Promise<BenchEnv> {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-'));
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  // `cordon serve` starts the gateway too: on a free port, not the default 8081 another run may hold.
  const gatewayPort = await freePort();
  const env: Record<string, string> = {
    CORDON_ISSUER: issuer,
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: `sqlite://${join(dir, 'cordon.sqlite')}`,
    CORDON_POLICY_DIR: join(ROOT, 'policies'),
    CORDON_KEY_DIR: join(dir, 'keys'),
    CORDON_AUDIT_DIR: join(dir, 'audit'),
    CORDON_LOG_LEVEL: 'silent',
    CORDON_GATEWAY_PORT: String(gatewayPort),
    CORDON_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
  };
  const b = await openLocal(env);
  try {
    const agents = await registerBenchAgents(b);
    return { dir, port, issuer, env, agents, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  } finally {
    await closeBroker(b);
  }
}

/** The bench's three agents on the broker's database. */
export async function registerBenchAgents(b: Broker): Promise<Agents> {
  const reg = async (name: string, policy: string) => {
    const r = await registerAgent(b, { name, policy, auth: 'secret', actor: 'bench' });
    return { id: r.agent.id, secret: r.clientSecret! };
  };
  return {
    planner: await reg('bench-planner', 'research-planner'),
    reader: await reg('bench-reader', 'doc-reader'),
    introspector: await reg('bench-rs', 'doc-reader'),
  };
}

export interface BrokerProcess {
  child: ChildProcess;
  url: string;
  /** The command line that started it. */
  how: string;
  stop(): Promise<number | null>;
}

/**
 * `node bin/cordon.js serve` in its own process, so the load generator does not share its event
 * loop. `nodeArgs` lets the profiler add --cpu-prof; `extraEnv` adds provider configuration.
 */
export async function startBrokerProcess(
  be: BenchEnv,
  opts: { nodeArgs?: string[]; extraEnv?: Record<string, string>; core?: boolean } = {},
): Promise<BrokerProcess> {
  if (opts.core) {
    return spawnBroker(
      be,
      ['--import', TSX, join(ROOT, 'bench', 'serve.ts')],
      'BENCH_SERVER=core node --import tsx bench/serve.ts (core app, no runtime extensions)',
      { ...opts, extraEnv: { ...opts.extraEnv, BENCH_SERVER: 'core' } },
    );
  }
  try {
    return await spawnBroker(be, [join(ROOT, 'bin', 'cordon.js'), 'serve'], 'node bin/cordon.js serve', opts);
  } catch (e) {
    process.stdout.write(`  (bin/cordon.js serve did not start: ${(e as Error).message}; using bench/serve.ts, the same startBroker)\n`);
    return spawnBroker(be, ['--import', TSX, join(ROOT, 'bench', 'serve.ts')], 'node --import tsx bench/serve.ts', opts);
  }
}

async function spawnBroker(
  be: BenchEnv,
  args: string[],
  how: string,
  opts: { nodeArgs?: string[]; extraEnv?: Record<string, string> },
): Promise<BrokerProcess> {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...args], {
    cwd: be.dir, // no stray .env from the repository is read
    env: { ...process.env, ...be.env, ...opts.extraEnv, NODE_ENV: 'production' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const url = be.issuer;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(
        `exited with ${child.exitCode} before listening: ${
          stderr
            .trim()
            .split('\n')
            .find((l) => /Error|cordon:/.test(l)) ?? stderr.trim().slice(-300)
        }`,
      );
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('did not answer /healthz within 20 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    url,
    how,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export const basic = (id: string, secret: string): string =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

export async function postForm(url: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
  });
  const text = await r.text();
  try {
    return { status: r.status, body: JSON.parse(text) };
  } catch {
    return { status: r.status, body: text };
  }
}
