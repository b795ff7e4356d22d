import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { ManualClock } from '../../src/clock.ts';
import { loadConfig, type Config } from '../../src/config/index.ts';
import { openBroker, closeBroker, type Broker } from '../../src/broker.ts';
import { listen, type RunningServer } from '../../src/http/server.ts';
import type { AppExtensions } from '../../src/http/app.ts';
import { registerAgent } from '../../src/agents/registry.ts';

export interface TestBroker {
  b: Broker;
  clock: ManualClock;
  dir: string;
  url: string;
  server?: RunningServer;
  register(name: string, policy: string): Promise<{ id: string; secret: string }>;
  close(): Promise<void>;
}

export const PG_URL = process.env.CORDON_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * A broker on a throw-away SQLite file (or the given database), with a manual clock that starts at
 * real time (so tokens verify with tools that use the wall clock) and, unless `http: false`, listening on a free port.
 */
export async function startTestBroker(
  opts: { http?: boolean; policyDir?: string; databaseUrl?: string; env?: Record<string, string>; ext?: AppExtensions } = {},
): Promise<TestBroker> {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-test-'));
  const clock = new ManualClock(Date.now());
  const config: Config = loadConfig({
    CORDON_ISSUER: 'http://127.0.0.1:0',
    DATABASE_URL: opts.databaseUrl ?? `sqlite://${join(dir, 'cordon.sqlite')}`,
    CORDON_POLICY_DIR: opts.policyDir ?? resolve('policies'),
    CORDON_KEY_DIR: join(dir, 'keys'),
    CORDON_AUDIT_DIR: join(dir, 'audit'),
    CORDON_LOG_LEVEL: 'silent',
    ...opts.env,
  });
  let b = await openBroker(config, { clock, log: pino({ level: 'silent' }) });
  let server: RunningServer | undefined;
  let url = config.issuer;
  if (opts.http !== false) {
    // The issuer must match the listening URL, so learn the port first, then reopen with it.
    const probe = await listen(b, opts.ext, 0);
    const port = new URL(probe.url).port;
    await probe.close();
    await closeBroker(b);
    const cfg2 = { ...config, issuer: `http://127.0.0.1:${port}`, port: Number(port) };
    b = await openBroker(cfg2, { clock, log: pino({ level: 'silent' }) });
    server = await listen(b, opts.ext, Number(port));
    url = server.url;
  }
  const tb: TestBroker = {
    b,
    clock,
    dir,
    url,
    server,
    async register(name, policy) {
      const r = await registerAgent(b, { name, policy, auth: 'secret' });
      return { id: r.agent.id, secret: r.clientSecret! };
    },
    async close() {
      await server?.close();
      await closeBroker(b);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return tb;
}

export const basic = (id: string, secret: string): string =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

export async function postForm(
  url: string,
  form: Record<string, string | string[]>,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) for (const x of Array.isArray(v) ? v : [v]) p.append(k, x);
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: p.toString() });
  const text = await r.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body, headers: r.headers };
}
