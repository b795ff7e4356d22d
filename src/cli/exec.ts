import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { constants as osConstants, homedir, platform } from 'node:os';
import { join } from 'node:path';
import { CordonAgent, toAwsIdentity, type BackendCredential } from '../sdk/agent.ts';
import { CordonSdkError } from '../sdk/errors.ts';
import { discoverUpstreams, gatewayEnv } from './exec-gateway.ts';

export interface ExecOptions {
  issuer: string;
  clientId: string;
  clientSecret?: string;
  scope: string;
  task?: string;
  /** Credential names (`--cred NAME`, repeatable). */
  creds: string[];
  /** The command and its arguments. */
  command: string[];
  /** `--gateway`: the gateway's URL; the child calls upstreams, AWS and egress through it (exec-gateway.ts). */
  gateway?: string;
}

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Secrets of the agent itself never reach the child: it gets session-bound tokens only. */
const AGENT_SECRETS = [
  'CORDON_CLIENT_SECRET',
  'CORDON_PRIVATE_KEY_FILE',
  'CORDON_BOOTSTRAP_TOKEN',
  'CORDON_FEDERATED_TOKEN_FILE',
  'CORDON_TOKEN',
  'CORDON_TOKEN_URI',
  'CORDON_TOKEN_AUTHORIZATION',
];
/** Standing AWS credentials would win over the container endpoint in the SDK's chain; the child must use the broker's. */
const AWS_STANDING = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_SECURITY_TOKEN',
  'AWS_PROFILE',
  'AWS_DEFAULT_PROFILE',
  'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI',
  'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE',
  'AWS_WEB_IDENTITY_TOKEN_FILE',
  'AWS_ROLE_ARN',
  'AWS_ROLE_SESSION_NAME',
];

const envName = (cred: string): string => `CORDON_CRED_${cred.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;

/**
 * `cordon exec`: opens a session as the agent, runs the command with session-bound credentials
 * in its environment, forwards SIGINT/SIGTERM/SIGHUP (SIGINT and SIGHUP not when the terminal
 * sent them to the child as well; see SignalRelay), and revokes the session when the command
 * exits, whatever the reason. Returns the command's exit code (128 + signal number when a signal
 * ended it; 127 when it could not be found, 126 when it could not be run).
 *
 * The child gets:
 * - `CORDON_TOKEN` (valid when it starts) and `CORDON_TOKEN_URI` + `CORDON_TOKEN_AUTHORIZATION`,
 *   a local endpoint that always answers a fresh token (`CordonAgent.fromEnv()` uses it);
 * - for an `aws-sts` credential, `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
 *   `AWS_CONTAINER_AUTHORIZATION_TOKEN`: the AWS SDK's container provider refreshes by itself
 *   (standing keys and profiles removed, the shared credentials and config files hidden, the
 *   config's region kept in `AWS_REGION`);
 * - for a Vault token, `VAULT_TOKEN`; for other credentials `CORDON_CRED_<NAME>` (JSON), and for
 *   all of them `CORDON_CREDENTIALS_URI/<name>`, which answers a fresh copy.
 * The local endpoint listens on 127.0.0.1 on a random port and wants the random authorization
 * value; nothing is written to disk.
 */
export async function runExec(opts: ExecOptions): Promise<number> {
  if (!opts.command.length || !opts.command[0]) throw new CordonSdkError('config', 'no command to run: cordon exec --scope S [--cred NAME] -- command args…');
  // A secret given here wins; otherwise the agent's other credentials come from the environment
  // (CORDON_PRIVATE_KEY_FILE, CORDON_BOOTSTRAP_TOKEN, CORDON_FEDERATED_TOKEN_FILE).
  const clientId = opts.clientId?.trim() || undefined;
  const agent =
    opts.clientSecret !== undefined
      ? new CordonAgent({ issuer: opts.issuer, clientId, clientSecret: opts.clientSecret })
      : CordonAgent.fromEnv(
          { ...process.env, CORDON_TOKEN: undefined, CORDON_TOKEN_URI: undefined },
          { issuer: opts.issuer, ...(clientId ? { clientId } : {}) },
        );
  const relay = new SignalRelay();
  let local: LocalEndpoint | null = null;
  let code: number;
  try {
    await agent.startSession({ scope: opts.scope, task: opts.task });
    const gw = opts.gateway
      ? gatewayEnv(opts.gateway, agent.issuer, await agent.token(), await discoverUpstreams(opts.gateway, await agent.token()))
      : undefined;
    const first = new Map<string, BackendCredential>();
    for (const name of new Set([...opts.creds, ...(gw?.awsCredential ? [gw.awsCredential] : [])])) first.set(name, await agent.credentials(name));
    const aws = [...first.values()].filter((c) => c.provider === 'aws-sts');
    if (aws.length > 1)
      throw new CordonSdkError(
        'unsupported',
        `only one aws-sts credential per command (got ${aws.map((c) => c.name).join(', ')}): the AWS SDK reads one container endpoint`,
      );
    local = await startLocalEndpoint(agent, [...first.keys()]);
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of AGENT_SECRETS) delete env[k];
    env.CORDON_ISSUER = agent.issuer;
    env.CORDON_SESSION = agent.session!.sid;
    env.CORDON_TOKEN = await agent.token();
    env.CORDON_TOKEN_URI = `${local.url}/token`;
    env.CORDON_TOKEN_AUTHORIZATION = local.authorization;
    if (first.size) env.CORDON_CREDENTIALS_URI = `${local.url}/credentials`;
    if (gw) {
      // Through the gateway the child needs no backend secret, so none of the parent's may leak in.
      for (const k of [...AWS_STANDING, 'VAULT_TOKEN', 'VAULT_SECRET_ID', 'VAULT_ROLE_ID']) delete env[k];
      Object.assign(env, gw.env);
    }
    let vaultToken: string | null = null;
    for (const c of first.values()) {
      if (c.provider === 'aws-sts') {
        toAwsIdentity(c); // refuse a malformed answer before the child depends on it
        for (const k of AWS_STANDING) delete env[k];
        env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${local.url}/aws/${encodeURIComponent(c.name)}`;
        env.AWS_CONTAINER_AUTHORIZATION_TOKEN = local.authorization;
        // A [default] profile in ~/.aws/credentials or ~/.aws/config (keys, credential_process, SSO,
        // role_arn) would otherwise win over the container endpoint. The region is the one thing the
        // child still needs from the config, so it moves into AWS_REGION first.
        if (platform() !== 'win32') {
          const region = awsRegionOf(process.env);
          if (region && !env.AWS_REGION) env.AWS_REGION = region;
          env.AWS_SHARED_CREDENTIALS_FILE = '/dev/null';
          env.AWS_CONFIG_FILE = '/dev/null';
        }
        env.AWS_EC2_METADATA_DISABLED = 'true';
        continue;
      }
      const token = c.provider === 'vault' ? vaultTokenOf(c) : null;
      if (token) {
        if (vaultToken) throw new CordonSdkError('unsupported', 'only one Vault token credential per command (VAULT_TOKEN holds one)');
        vaultToken = token;
        env.VAULT_TOKEN = token;
      } else {
        env[envName(c.name)] = JSON.stringify(c.credentials);
      }
    }
    // Interrupted while the session was being set up: do not start the command at all.
    code = relay.received ? signalCode(relay.received) : await runChild(opts.command, env, relay);
  } finally {
    await local?.close();
    try {
      await agent.close();
    } catch (e) {
      process.stderr.write(
        `cordon exec: could not revoke session ${agent.session?.sid ?? ''}: ${(e as Error).message}; its tokens stay valid until they expire\n`,
      );
    }
    // Kept until the revocation is done, so a second Ctrl-C does not cut it short (each request has a timeout).
    relay.dispose();
  }
  return code;
}

/**
 * The region the AWS SDK would have used: AWS_REGION, AWS_DEFAULT_REGION, or `region` in the
 * profile's section of the shared config file (AWS_CONFIG_FILE or ~/.aws/config).
 */
export function awsRegionOf(env: NodeJS.ProcessEnv): string | undefined {
  const fromEnv = env.AWS_REGION?.trim() || env.AWS_DEFAULT_REGION?.trim();
  if (fromEnv) return fromEnv;
  const profile = env.AWS_PROFILE?.trim() || env.AWS_DEFAULT_PROFILE?.trim() || 'default';
  let text: string;
  try {
    text = readFileSync(env.AWS_CONFIG_FILE?.trim() || join(env.HOME ?? homedir(), '.aws', 'config'), 'utf8');
  } catch {
    return undefined;
  }
  let inProfile = false;
  for (const line of text.split(/\r?\n/)) {
    const section = /^\s*\[\s*([^\]]+?)\s*\]/.exec(line);
    if (section) {
      const name = section[1].replace(/^profile\s+/, '');
      inProfile = name === profile;
      continue;
    }
    const kv = /^(\S[^=]*?)\s*=\s*(.*?)\s*$/.exec(line); // top-level keys only: indented lines belong to a sub-section
    if (inProfile && kv && kv[1] === 'region' && kv[2]) return kv[2];
  }
  return undefined;
}

function vaultTokenOf(c: BackendCredential): string | null {
  const x = c.credentials;
  for (const k of ['client_token', 'token', 'VAULT_TOKEN']) if (typeof x[k] === 'string' && x[k]) return x[k];
  const auth = x.auth as Record<string, unknown> | undefined;
  if (auth && typeof auth.client_token === 'string') return auth.client_token;
  return null;
}

/**
 * Signals for the whole run: before the child exists they are remembered (the command is then
 * not started and the session is still revoked); once it runs they are forwarded to it.
 *
 * The child runs in our process group (not detached: a child in a group of its own would be a
 * background job of the terminal and be stopped by SIGTTIN/SIGTTOU as soon as an interactive
 * command touches it). So when we are in the terminal's foreground group, the terminal's own
 * SIGINT (Ctrl-C) and SIGHUP (hang-up) already reach the child: forwarding them would deliver
 * them twice. Those two are then not forwarded; SIGTERM (never sent by a terminal) always is,
 * and without a terminal (services, CI, `kill PID`) all three are.
 */
class SignalRelay {
  child: ChildProcess | null = null;
  received: NodeJS.Signals | null = null;
  readonly #handlers = new Map<NodeJS.Signals, () => void>();
  constructor(inForeground: () => boolean = inTerminalForeground) {
    for (const sig of FORWARDED) {
      const h = () => {
        const c = this.child;
        if (c && c.exitCode === null && c.signalCode === null) {
          if (sig !== 'SIGTERM' && inForeground()) return; // the terminal signalled the whole group, child included
          c.kill(sig);
        } else this.received ??= sig;
      };
      this.#handlers.set(sig, h);
      process.on(sig, h);
    }
  }
  dispose(): void {
    for (const [sig, h] of this.#handlers) process.removeListener(sig, h);
  }
}

/**
 * Is this process in the foreground process group of its controlling terminal (so a signal the
 * terminal generates reaches every process of the group)? Linux: /proc/self/stat (pgrp, tty_nr,
 * tpgid); elsewhere, a terminal on stdin is taken to mean yes.
 */
export function inTerminalForeground(): boolean {
  let stat: string;
  try {
    stat = readFileSync('/proc/self/stat', 'utf8');
  } catch {
    return process.stdin.isTTY === true;
  }
  // After "pid (comm) ": state ppid pgrp session tty_nr tpgid …
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const pgrp = Number(f[2]);
  const ttyNr = Number(f[4]);
  const tpgid = Number(f[5]);
  return ttyNr !== 0 && tpgid > 0 && tpgid === pgrp;
}

const signalCode = (signal: string | null): number => 128 + ((signal && (osConstants.signals as Record<string, number>)[signal]) || 0);

function runChild(command: string[], env: NodeJS.ProcessEnv, relay: SignalRelay): Promise<number> {
  return new Promise<number>((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(command[0], command.slice(1), { stdio: 'inherit', env });
    } catch (e) {
      process.stderr.write(`cordon exec: cannot run ${command[0]}: ${(e as Error).message}\n`);
      resolve(126);
      return;
    }
    relay.child = child;
    child.on('error', (e: NodeJS.ErrnoException) => {
      process.stderr.write(`cordon exec: cannot run ${command[0]}: ${e.code === 'ENOENT' ? 'command not found' : e.message}\n`);
      resolve(e.code === 'ENOENT' ? 127 : 126);
    });
    child.on('exit', (code, signal) => resolve(code !== null ? code : signalCode(signal)));
  });
}

interface LocalEndpoint {
  url: string;
  authorization: string;
  close(): Promise<void>;
}

/** The child's view of the broker: fresh tokens and credentials, on loopback, behind a random bearer value. */
async function startLocalEndpoint(agent: CordonAgent, credNames: string[]): Promise<LocalEndpoint> {
  const authorization = randomBytes(32).toString('base64url');
  const expected = Buffer.from(authorization);
  let port = 0;
  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const fail = (res: ServerResponse, e: unknown) => {
    if (e instanceof CordonSdkError && e.code === 'session_ended') return send(res, 401, { error: 'invalid_grant', error_description: e.message });
    if (e instanceof CordonSdkError && e.code === 'oauth')
      return send(res, e.status && e.status < 500 ? 403 : 502, { error: e.error, error_description: e.error_description ?? e.message });
    return send(res, 502, { error: 'bad_gateway', error_description: e instanceof Error ? e.message : 'broker unavailable' });
  };
  const handler = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // DNS rebinding: a browser page cannot name 127.0.0.1:port as its Host.
    if (req.headers.host !== `127.0.0.1:${port}`) return send(res, 403, { error: 'access_denied', error_description: 'bad Host' });
    const given = Buffer.from(String(req.headers.authorization ?? ''));
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      return send(res, 401, { error: 'invalid_token', error_description: 'authorization is required' });
    if (req.method !== 'GET') return send(res, 405, { error: 'invalid_request', error_description: 'GET only' });
    const path = (req.url ?? '/').split('?')[0];
    try {
      if (path === '/token') {
        const t = await agent.tokenInfo();
        const s = agent.session!;
        return send(res, 200, {
          access_token: t.accessToken,
          token_type: t.tokenType,
          expires_in: Math.max(1, Math.floor((t.expiresAt - Date.now()) / 1000)),
          scope: s.scope.join(' '),
          sid: s.sid,
          ...(s.expiresAt !== null ? { session_expires_at: Math.floor(s.expiresAt / 1000) } : {}),
        });
      }
      const m = /^\/(aws|credentials)\/([^/]+)$/.exec(path);
      const name = m ? decodeURIComponent(m[2]) : '';
      if (!m || !credNames.includes(name)) return send(res, 404, { error: 'not_found', error_description: 'no such credential for this command' });
      const c = await agent.credentials(name);
      if (m[1] === 'aws') {
        const id = toAwsIdentity(c);
        // The container-credentials shape the AWS SDKs read (as ECS and aws-vault serve it).
        return send(res, 200, {
          AccessKeyId: id.accessKeyId,
          SecretAccessKey: id.secretAccessKey,
          // The SDKs want a string here; gateway keys have no session token, and an empty one is never sent.
          Token: id.sessionToken ?? '',
          Expiration: (id.expiration ?? c.expiresAt).toISOString(),
        });
      }
      return send(res, 200, {
        name: c.name,
        provider: c.provider,
        expires_at: c.expiresAt.toISOString(),
        ...(c.leaseId ? { lease_id: c.leaseId } : {}),
        ...(c.static ? { static: true } : {}),
        credentials: c.credentials,
      });
    } catch (e) {
      return fail(res, e);
    }
  };
  const server: Server = createServer((req, res) => {
    handler(req, res).catch((e) => fail(res, e));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    authorization,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
