/**
 * The soak's world: the Vault and STS doubles and a recording upstream in this process (so the
 * checks can ask the doubles what is still alive), and `cordon serve` (broker and gateway) in its
 * own process on a throw-away SQLite file, with a short sweep interval and retention window.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { VaultDouble } from '../../test/doubles/vault.ts';
import { StsDouble } from '../../test/doubles/sts.ts';
import { loadConfig } from '../../src/config/index.ts';
import { openBroker, closeBroker } from '../../src/broker.ts';
import { registerAgent } from '../../src/agents/registry.ts';
import { freePort, ROOT, TSX } from '../lib/broker-proc.ts';

export const ROLE_ARN = 'arn:aws:iam::123456789012:role/soak-reports';
export const API_KEY = 'soak-KEY-0123456789abcdef';
export const GET_REPORT = { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' };
const SESSION_POLICY = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: ['s3:GetObject'], Resource: ['arn:aws:s3:::reports/*'] }],
});

export interface SoakSettings {
  /** Session and root token lifetime (policy session_ttl and token_ttl), seconds. */
  sessionTtlSec: number;
  sweepIntervalSec: number;
  /** CORDON_RETENTION. */
  retention: string;
}

/** Root agent (sessions, credentials, gateway calls), its delegate, and a resource server that introspects. */
const policies = (upstreamUrl: string, s: SoakSettings): Record<string, string> => ({
  'soak-root.yaml': `
name: soak-root
description: Root agent of the soak.
token_ttl: ${s.sessionTtlSec}s
session_ttl: ${s.sessionTtlSec}s
scopes: [work:read, cred:vault-token, cred:vault-db, cred:s3-iam, gw:tickets]
delegation:
  max_depth: 1
  scopes: [work:read, cred:vault-token]
credentials:
  vault-token: { provider: vault, vault_policies: [tickets-read], ttl: ${s.sessionTtlSec}s }
  vault-db: { provider: vault, path: database/creds/tickets-ro, ttl: ${s.sessionTtlSec}s }
  s3-iam: { provider: aws-sts, role_arn: "${ROLE_ARN}", session_policy: ${SESSION_POLICY}, ttl: ${s.sessionTtlSec}s }
  tickets-key: { provider: vault, path: secret/data/tickets/api, ttl: ${s.sessionTtlSec}s }
upstreams:
  tickets:
    url: ${upstreamUrl}/api
    credential: tickets-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    timeout: 5s
    rules:
      read: { methods: [GET], paths: ["/tickets/*"] }
`,
  'soak-worker.yaml': `
name: soak-worker
description: The soak's sub-agent.
token_ttl: ${s.sessionTtlSec}s
session_ttl: ${s.sessionTtlSec}s
# Its cred:vault-token comes by delegation: the session root's definition governs it.
scopes: [work:read, cred:vault-token]
`,
  'soak-rs.yaml': `
name: soak-rs
description: A resource server that introspects.
scopes: [work:read]
`,
});

/** Counts what reached the upstream, and whether the gateway injected the Vault-held key. */
export class CountingUpstream {
  calls = 0;
  withoutKey = 0;
  #server?: Server;
  url = '';
  async start(): Promise<void> {
    this.#server = createServer((req, res) => {
      this.calls++;
      if (req.headers.authorization !== `Bearer ${API_KEY}`) this.withoutKey++;
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok: true, path: req.url }));
      });
    });
    await new Promise<void>((r) => this.#server!.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }
  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }
}

export interface Agent {
  id: string;
  secret: string;
}

export interface SoakWorld {
  dir: string;
  env: Record<string, string>;
  brokerUrl: string;
  gatewayUrl: string;
  sqliteFile: string;
  vault: VaultDouble;
  sts: StsDouble;
  upstream: CountingUpstream;
  agents: { root: Agent; worker: Agent; rs: Agent };
  broker?: { child: ChildProcess; exited: Promise<number | null>; logFile: string };
  stop(opts?: { keep?: boolean }): Promise<void>;
}

/** The doubles, the upstream, policies, database and agents; the broker is started by `startBroker`. */
export async function prepareWorld(s: SoakSettings): Promise<SoakWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-soak-'));
  const vault = new VaultDouble('root-token');
  await vault.start();
  // Least privilege, as the README sets the broker up: its token mints agent tokens through a token role.
  vault.setPolicyPaths('broker', [
    { path: 'auth/token/create', capabilities: ['update'] },
    { path: 'auth/token/create/cordon-agents', capabilities: ['update'] },
    { path: 'auth/token/revoke-accessor', capabilities: ['update'] },
    { path: 'auth/token/lookup-self', capabilities: ['read'] },
    { path: 'auth/token/renew-self', capabilities: ['update'] },
    { path: 'sys/leases/revoke', capabilities: ['update'] },
    { path: 'database/creds/tickets-ro', capabilities: ['read'] },
    { path: 'secret/data/tickets/*', capabilities: ['read'] },
  ]);
  vault.setPolicyPaths('tickets-read', [{ path: 'database/creds/tickets-ro', capabilities: ['read'] }]);
  vault.addTokenRole('cordon-agents', { allowedPolicies: ['tickets-read'], orphan: false, renewable: false, tokenExplicitMaxTtlSec: 3600 });
  vault.addDatabaseRole('tickets-ro', 3600);
  vault.putKv('tickets/api', { api_key: API_KEY });
  const brokerToken = vault.mintToken({ policies: ['broker'], addDefault: false, displayName: 'cordon-broker', ttlSec: 24 * 3600 }).token;

  const sts = new StsDouble();
  await sts.start();
  sts.addRole(ROLE_ARN, { maxSessionDuration: 43200 });

  const upstream = new CountingUpstream();
  await upstream.start();

  const policyDir = join(dir, 'policies');
  mkdirSync(policyDir);
  for (const [f, text] of Object.entries(policies(upstream.url, s))) writeFileSync(join(policyDir, f), text);
  const port = await freePort();
  const gatewayPort = await freePort();
  const sqliteFile = join(dir, 'cordon.sqlite');
  const env: Record<string, string> = {
    CORDON_ISSUER: `http://127.0.0.1:${port}`,
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: `sqlite://${sqliteFile}`,
    CORDON_POLICY_DIR: policyDir,
    CORDON_KEY_DIR: join(dir, 'keys'),
    CORDON_AUDIT_DIR: join(dir, 'audit'),
    CORDON_LOG_LEVEL: 'warn',
    CORDON_GATEWAY_PORT: String(gatewayPort),
    CORDON_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
    CORDON_SWEEP_INTERVAL: String(s.sweepIntervalSec),
    CORDON_RETENTION: s.retention,
    VAULT_ADDR: vault.url,
    VAULT_TOKEN: brokerToken,
    VAULT_TOKEN_ROLE: 'cordon-agents',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_STS: sts.url,
    AWS_ENDPOINT_URL_IAM: sts.url,
    AWS_ACCESS_KEY_ID: sts.accessKeyId,
    AWS_SECRET_ACCESS_KEY: sts.secretAccessKey,
  };

  // Agents are registered before the broker process opens the database.
  const b = await openBroker(loadConfig(env), { log: pino({ level: 'silent' }) });
  let agents: SoakWorld['agents'];
  try {
    const reg = async (name: string, policy: string): Promise<Agent> => {
      const r = await registerAgent(b, { name, policy, auth: 'secret', actor: 'soak' });
      return { id: r.agent.id, secret: r.clientSecret! };
    };
    agents = { root: await reg('soak-root', 'soak-root'), worker: await reg('soak-worker', 'soak-worker'), rs: await reg('soak-rs', 'soak-rs') };
  } finally {
    await closeBroker(b);
  }

  const world: SoakWorld = {
    dir,
    env,
    brokerUrl: env.CORDON_ISSUER,
    gatewayUrl: env.CORDON_GATEWAY_URL,
    sqliteFile,
    vault,
    sts,
    upstream,
    agents,
    async stop(opts = {}) {
      await stopBroker(world);
      await upstream.stop();
      await vault.stop();
      await sts.stop();
      if (!opts.keep) rmSync(dir, { recursive: true, force: true });
    },
  };
  return world;
}

/**
 * `cordon serve` from this checkout's source (bench/soak/cordon.ts is bin/cordon.js without the
 * build step), its stderr (warnings and errors) kept in a log file. Waits until both the broker and
 * the gateway answer /healthz.
 */
export async function startBroker(w: SoakWorld): Promise<void> {
  const logFile = join(w.dir, 'broker.log');
  const log = createWriteStream(logFile);
  const child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'bench', 'soak', 'cordon.ts'), 'serve'], {
    cwd: w.dir, // no stray .env from the repository is read
    env: { ...process.env, ...w.env, NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  w.broker = { child, exited, logFile };
  const deadline = Date.now() + 30_000;
  for (const url of [`${w.brokerUrl}/healthz`, `${w.gatewayUrl}/healthz`]) {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`cordon serve exited with ${child.exitCode} before answering (see ${logFile})`);
      try {
        if ((await fetch(url)).ok) break;
      } catch {
        /* not up yet */
      }
      if (Date.now() > deadline) throw new Error(`${url} did not answer within 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** SIGTERM, as an operator stops it; its exit code (null: it had to be killed). */
export async function stopBroker(w: SoakWorld): Promise<number | null> {
  const p = w.broker;
  if (!p) return null;
  w.broker = undefined;
  if (p.child.exitCode !== null) return p.child.exitCode;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
  const code = await p.exited;
  clearTimeout(t);
  return code;
}

/** A `cordon` command from this checkout's source against the soak's database (status, audit verify). */
export async function cordon(w: SoakWorld, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'bench', 'soak', 'cordon.ts'), ...args], {
    cwd: w.dir,
    env: { ...process.env, ...w.env, CORDON_LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  return { code, out, err };
}
