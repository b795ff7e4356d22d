import { existsSync } from 'node:fs';
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { ROOT, TSX } from './broker-proc.ts';

/**
 * Section 5 of the bench: parts that belong to later issues. Each runs only when its code exists,
 * and is driven through the interface the issue describes; anything else is reported as skipped.
 */

export const MIDDLEWARE_FILE = join(ROOT, 'src', 'sdk', 'middleware.ts');
/** Where the credential issue code may live (the issue names src/tokens/credentials.ts). */
export const CREDENTIALS_FILES = [join(ROOT, 'src', 'tokens', 'credentials.ts'), join(ROOT, 'src', 'http', 'credentials.ts')];
export const VAULT_DOUBLE_FILE = join(ROOT, 'test', 'doubles', 'vault.ts');

export const hasMiddleware = (): boolean => existsSync(MIDDLEWARE_FILE);
export const hasCredentials = (): boolean => CREDENTIALS_FILES.some((f) => existsSync(f)) && existsSync(VAULT_DOUBLE_FILE);

export interface RateResult {
  name: string;
  opsPerSec: number;
  /** Operations per CPU-second of this process (all threads), i.e. the one-core rate. */
  opsPerCpuSec: number;
  usPerOp: number;
  total: number;
}

/** Runs `op` for `seconds` with `inFlight` concurrent calls; counts completions. */
export async function rate(name: string, op: () => Promise<unknown>, seconds = 3, inFlight = 8): Promise<RateResult> {
  for (let i = 0; i < 200; i++) await op(); // warm
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let total = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        await op();
        total++;
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  const cpu = (c.user + c.system) / 1e6;
  return { name, opsPerSec: total / wall, opsPerCpuSec: total / cpu, usPerOp: (wall * 1e6) / total, total };
}

// ------------------------------------------------------------------------- middleware

type Mw = (req: unknown, res: unknown, next: (err?: unknown) => void) => unknown;

/** Drives an express-style middleware with minimal request/response objects; resolves 'ok' when it calls next(). */
function callMiddleware(mw: Mw, token: string): Promise<string> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, host: 'rs.bench.local' };
    const req = {
      method: 'GET',
      url: '/resource',
      originalUrl: '/resource',
      path: '/resource',
      baseUrl: '',
      protocol: 'http',
      secure: false,
      hostname: 'rs.bench.local',
      ip: '127.0.0.1',
      headers,
      get: (n: string) => headers[n.toLowerCase()],
      header: (n: string) => headers[n.toLowerCase()],
    };
    const out: Record<string, unknown> = {};
    const done = (body?: unknown) => resolve(`${res.statusCode} ${typeof body === 'string' ? body : JSON.stringify(body ?? '')}`.slice(0, 300));
    const res = {
      statusCode: 200,
      locals: {},
      headersSent: false,
      status(c: number) {
        res.statusCode = c;
        return res;
      },
      set(k: string | Record<string, string>, v?: string) {
        if (typeof k === 'string') out[k.toLowerCase()] = v;
        return res;
      },
      header(k: string, v: string) {
        out[k.toLowerCase()] = v;
        return res;
      },
      setHeader(k: string, v: string) {
        out[k.toLowerCase()] = v;
      },
      getHeader: (k: string) => out[k.toLowerCase()],
      append(k: string, v: string) {
        out[k.toLowerCase()] = v;
        return res;
      },
      type: () => res,
      json: done,
      send: done,
      end: done,
      sendStatus(c: number) {
        res.statusCode = c;
        done();
      },
    };
    try {
      const r = mw(req, res, (err?: unknown) => resolve(err ? `next(err): ${(err as Error)?.message ?? String(err)}` : 'ok'));
      if (r && typeof (r as Promise<unknown>).catch === 'function') (r as Promise<unknown>).catch((e: Error) => resolve(`threw: ${e?.message}`));
    } catch (e) {
      resolve(`threw: ${(e as Error).message}`);
    }
  });
}

export interface MiddlewareBench {
  jose: RateResult;
  /** node:crypto.verify alone on the same signing input: what the signature itself costs. */
  rawVerify?: RateResult;
  /** `mw.verify(...)`: the whole check without express (signature, claims, revocation, scopes). */
  verify?: RateResult;
  /** The express middleware itself, driven with minimal req/res objects, every request a signature check. */
  middleware?: RateResult;
  /** The same with the middleware's default verified-token cache (one client reusing one token). */
  middlewareCached?: RateResult;
  /** Per-request cost the middleware adds over jose alone (revocation check, claim checks, req.agent), µs of CPU. */
  overheadUs?: number;
  /** `revocations.isRevoked(jti, sid, chain)` alone, with the set holding `revocationSetSize` entries. */
  revocationCheckNs?: number;
  revocationSetSize?: number;
  revokedInFeed: number;
  skipped?: string;
}

interface MwLike {
  (req: unknown, res: unknown, next: (err?: unknown) => void): unknown;
  verify?: (input: { authorization?: string; method: string; url: string }) => Promise<unknown>;
  ready?: () => Promise<void>;
  close?: () => void;
  revocations?: {
    isRevoked(jti: string, sid: string, agents: readonly string[]): boolean;
    add?(e: { kind: 'jti' | 'sid' | 'agent'; value: string; exp: number }): void;
    size?: number;
  };
}

/**
 * Middleware verification in this process against the running broker's JWKS and revocation feed
 * (which holds `revokedInFeed` entries), compared with jose's own verify rate on the same token.
 */
export async function middlewareBench(issuer: string, token: string, revokedInFeed: number, seconds = 3): Promise<MiddlewareBench> {
  const jwks = createLocalJWKSet(await (await fetch(`${issuer}/jwks`)).json());
  const jose = await rate(
    'jose jwtVerify (EdDSA)',
    () => jwtVerify(token, jwks, { issuer, audience: issuer, typ: 'at+jwt', algorithms: ['EdDSA', 'ES256'] }),
    seconds,
  );
  // The floor: node:crypto's synchronous Ed25519 verify of the same JWS, no JWT parsing or claim checks.
  const jwk = ((await (await fetch(`${issuer}/jwks`)).json()) as { keys: Array<Record<string, unknown>> }).keys[0];
  const pub = createPublicKey({ key: jwk as never, format: 'jwk' });
  const [h, p, sig] = token.split('.');
  const input = Buffer.from(`${h}.${p}`);
  const sigBuf = Buffer.from(sig, 'base64url');
  const raw = await rate(
    'node:crypto verify (Ed25519, same JWS)',
    async () => {
      if (!cryptoVerify(null, input, pub, sigBuf)) throw new Error('bad signature');
    },
    Math.min(seconds, 2),
    1,
  );
  const out: MiddlewareBench = { jose, rawVerify: raw, revokedInFeed };
  let factory: (o: Record<string, unknown>) => MwLike | Promise<MwLike>;
  try {
    const mod = await import(pathToFileURL(MIDDLEWARE_FILE).href);
    factory = mod.requireAgentToken ?? mod.default;
    if (typeof factory !== 'function') return { ...out, skipped: 'src/sdk/middleware.ts exports no requireAgentToken' };
  } catch (e) {
    return { ...out, skipped: `could not load the middleware: ${(e as Error).message}` };
  }
  // Cold: every request pays the signature check (verifiedCacheSize 0, where the option exists).
  // Cached: the default, where a client that reuses its token costs a map lookup.
  for (const variant of ['cold', 'cached'] as const) {
    let mw: MwLike;
    try {
      mw = await factory({ issuer, audience: issuer, scopes: ['docs:read'], ...(variant === 'cold' ? { verifiedCacheSize: 0 } : {}) });
      if (typeof mw !== 'function') return { ...out, skipped: 'requireAgentToken(...) did not return a middleware function' };
    } catch (e) {
      return { ...out, skipped: `could not build the middleware: ${(e as Error).message}` };
    }
    try {
      if (typeof mw.ready === 'function') await mw.ready();
      // First calls fetch JWKS and the revocation feed; wait until a call succeeds.
      let first = '';
      for (let i = 0; i < 50; i++) {
        first = await callMiddleware(mw, token);
        if (first === 'ok') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      if (first !== 'ok') return { ...out, skipped: `the middleware refused a live token: ${first}` };
      if (typeof mw.verify === 'function' && variant === 'cold') {
        const v = mw.verify.bind(mw);
        out.verify = await rate(
          'middleware verify(), cold',
          () => v({ authorization: `Bearer ${token}`, method: 'GET', url: 'http://rs.bench.local/resource' }),
          seconds,
        );
      }
      let bad = 0;
      const m = await rate(
        `requireAgentToken (express middleware), ${variant}`,
        async () => {
          if ((await callMiddleware(mw, token)) !== 'ok') bad++;
        },
        seconds,
      );
      if (bad) return { ...out, skipped: `${bad} middleware calls did not pass the token` };
      if (variant === 'cold') {
        out.middleware = m;
        out.overheadUs = 1e6 / m.opsPerCpuSec - 1e6 / jose.opsPerCpuSec;
      } else out.middlewareCached = m;
      const set = mw.revocations;
      if (variant === 'cold' && set && typeof set.isRevoked === 'function') {
        // Grow the set to 10,000+ entries (synthetic ids that match nothing), then time the check alone.
        if (typeof set.add === 'function') for (let i = 0; i < 10_000; i++) set.add({ kind: i % 2 ? 'jti' : 'sid', value: `bench-${i}`, exp: 2e9 });
        const chain = ['agt_planner', 'agt_reader'];
        const n = 2_000_000;
        let hits = 0;
        const t0 = performance.now();
        for (let i = 0; i < n; i++) if (set.isRevoked(i & 1 ? 'some-live-jti-value-xx' : 'bench-1', 'ses_live_session_id_xxxxx', chain)) hits++;
        out.revocationCheckNs = ((performance.now() - t0) * 1e6) / n;
        out.revocationSetSize = set.size;
        if (hits !== n / 2) out.skipped = `revocation set answered ${hits} of ${n / 2} expected hits`;
      }
    } finally {
      if (typeof mw.close === 'function') mw.close();
    }
  }
  return out;
}

// ------------------------------------------------------------------------- Vault double

export interface VaultDoubleProcess {
  child: ChildProcess;
  url: string;
  rootToken: string;
  /** Requests the double has answered so far. */
  count(): Promise<number>;
  stop(): Promise<void>;
}

/** The Vault double in its own process (bench/vault-double.ts), so it shares no event loop with the broker or autocannon. */
export async function startVaultDouble(): Promise<VaultDoubleProcess> {
  const child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'bench', 'vault-double.ts')], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'], cwd: ROOT });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /VAULT_ADDR=(\S+)/.exec(buf);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`vault double exited with ${code}`)));
    setTimeout(() => reject(new Error('vault double did not start within 15 s')), 15_000);
  });
  return {
    child,
    url,
    rootToken: 'root-token',
    count: () =>
      new Promise<number>((resolve) => {
        child.once('message', (m: { count: number }) => resolve(m.count));
        child.send('count');
      }),
    async stop() {
      child.disconnect?.();
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// ------------------------------------------------------------------------- calibration and floors

export interface AuxServer {
  child: ChildProcess;
  url: string;
  /** Further `KEY=value` pairs the server printed after LISTENING (the floor servers print a TOKEN). */
  printed: Record<string, string>;
  stop(): Promise<void>;
}

/** A bench server script in its own process that prints `LISTENING=<url> [KEY=value…]` once listening. */
export async function startAuxServer(script: string, args: string[] = []): Promise<AuxServer> {
  // stderr is kept for a failure only: oidc-provider warns about its runtime and dev defaults on every start.
  const child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'bench', script), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: ROOT,
    env: { ...process.env, NODE_ENV: 'production' },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /LISTENING=[^\n]*\n/.exec(buf);
      if (m) resolve(m[0].trim());
    });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}: ${stderr.trim()}`)));
    setTimeout(() => reject(new Error(`${script} did not start within 15 s: ${stderr.trim()}`)), 15_000);
  });
  const printed = Object.fromEntries(line.split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  return {
    child,
    url: printed.LISTENING,
    printed,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** bench/calibrate-server.ts: a bare node:http server, the ceiling for any HTTP scenario here. */
export const startCalibrationServer = (): Promise<AuxServer> => startAuxServer('calibrate-server.ts');
