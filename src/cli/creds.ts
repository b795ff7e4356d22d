/**
 * `cordon creds NAME` (ask a running broker for a backend credential and print it as JSON,
 * shell exports or an AWS credential_process document) and `cordon exec` (run a command
 * inside a session; the work is in exec.ts).
 */
import type { Command } from 'commander';
import { NAME_PATTERN } from '../policy/schema.ts';
import { ConfigError } from '../errors.ts';
import { action, env, issuerUrl, leaf, type Ctx } from './context.ts';
import { CliError, printJson, shellQuote, usage } from './output.ts';

import type { CredentialResponse } from '../credentials/issue.ts';

const FORMATS = ['json', 'env', 'credential_process'] as const;
type Format = (typeof FORMATS)[number];

/** AWS keys, whether from STS (`AccessKeyId`…) or a Vault `aws/creds` read (`access_key`…). */
function awsKeys(c: Record<string, unknown>): { id: string; secret: string; token?: string; expiration?: string } | undefined {
  const s = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const id = s(c.AccessKeyId) ?? s(c.access_key);
  const secret = s(c.SecretAccessKey) ?? s(c.secret_key);
  if (!id || !secret) return undefined;
  return { id, secret, token: s(c.SessionToken) ?? s(c.security_token) ?? s(c.session_token), expiration: s(c.Expiration) };
}

/** `tickets-db` → `TICKETS_DB`: a prefix fit for a shell variable name. */
const envName = (s: string): string =>
  s
    .toUpperCase()
    .replace(/[^A-Z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .replace(/^(\d)/, '_$1');

/** Shell `export` lines for a credential: AWS variables, VAULT_TOKEN, or NAME_KEY=value for a secret's fields. */
export function envLines(r: CredentialResponse): string[] {
  const c = r.credentials ?? {};
  const aws = awsKeys(c);
  const line = (k: string, v: string) => `export ${k}=${shellQuote(v)}`;
  if (aws) {
    return [line('AWS_ACCESS_KEY_ID', aws.id), line('AWS_SECRET_ACCESS_KEY', aws.secret), ...(aws.token ? [line('AWS_SESSION_TOKEN', aws.token)] : [])];
  }
  const token = c.client_token ?? c.token ?? c.VAULT_TOKEN;
  if (typeof token === 'string' && token) return [line('VAULT_TOKEN', token)];
  // A dynamic or KV secret: every scalar field, prefixed with the credential name (TICKETS_DB_USERNAME, TICKETS_DB_PASSWORD).
  const prefix = envName(r.name || 'cordon');
  const out: string[] = [];
  for (const [k, v] of Object.entries(c)) {
    if (v === null || typeof v === 'object') continue;
    out.push(line(`${prefix}_${envName(k)}`, String(v)));
  }
  return out;
}

/** The exact document the AWS CLI and SDKs expect from a `credential_process`. */
export function credentialProcess(r: CredentialResponse): string {
  const aws = awsKeys(r.credentials ?? {});
  if (!aws) throw new CliError(`credential_process output is for AWS credentials; ${r.name} is a ${r.provider} credential (use --format env or json)`);
  if (!aws.token) throw new CliError(`${r.name} has no session token; refusing to hand out long-lived AWS keys as credential_process`);
  return JSON.stringify({ Version: 1, AccessKeyId: aws.id, SecretAccessKey: aws.secret, SessionToken: aws.token, Expiration: aws.expiration ?? r.expires_at });
}

/** Calls the broker; a refusal becomes `cordon: <error>: <error_description>`. */
export async function fetchCredential(issuer: string, name: string, token: string): Promise<CredentialResponse> {
  const url = `${issuer}/credentials/${encodeURIComponent(name)}`;
  let res: Response;
  try {
    res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, signal: AbortSignal.timeout(30_000) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new CliError(`cannot reach the broker at ${issuer}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CliError(`the broker answered HTTP ${res.status} with a body that is not JSON`);
  }
  const b = body as Record<string, unknown>;
  if (!res.ok) {
    if (typeof b.error === 'string') throw new CliError(`${b.error}: ${typeof b.error_description === 'string' ? b.error_description : `HTTP ${res.status}`}`);
    throw new CliError(`the broker answered HTTP ${res.status}`);
  }
  if (typeof b.credentials !== 'object' || b.credentials === null) throw new CliError('the broker answer has no credentials');
  return body as CredentialResponse;
}

export function registerCreds(program: Command, ctx: Ctx): void {
  leaf(program, 'creds <name>', 'get a backend credential from the running broker for the token in --token or CORDON_TOKEN')
    .option('--token <jwt>', 'the access token (default: CORDON_TOKEN)')
    .option('--format <format>', 'json, env or credential_process', 'json')
    .option('--issuer <url>', 'the broker (default: CORDON_ISSUER)')
    .action(
      action(ctx, async ({ args: [name], opts, json }) => {
        const format = (json ? 'json' : opts.format) as Format;
        if (!FORMATS.includes(format)) throw usage(`--format must be one of ${FORMATS.join(', ')}, got "${opts.format}"`);
        if (!NAME_PATTERN.test(name)) throw usage(`credential name must match ${NAME_PATTERN}`);
        const token = (opts.token ?? env().CORDON_TOKEN ?? '').trim();
        if (!token) throw new ConfigError('CORDON_TOKEN', 'no access token: pass --token or set CORDON_TOKEN');
        const r = await fetchCredential(issuerUrl(opts.issuer), name, token);
        if (format === 'json') return void (await printJson(ctx.io, r));
        if (format === 'credential_process') return void ctx.io.out(`${credentialProcess(r)}\n`);
        const lines = envLines(r);
        if (!lines.length) throw new CliError(`${name}: the credential has no fields to export`);
        await ctx.io.out(`${lines.join('\n')}\n`);
      }),
    );
}

export function registerExec(program: Command, ctx: Ctx): void {
  leaf(
    program,
    'exec',
    'open a session, fetch credentials into the environment and run a command: cordon exec --scope S --task T [--cred NAME…] -- command args…',
  )
    .requiredOption('--scope <scope>', 'the task scope to open the session for (space-separated)')
    .requiredOption('--task <task>', 'the task id the session is opened for')
    .option('--cred <name>', 'a credential to fetch into the environment (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--gateway', 'call upstreams, AWS and egress through the gateway (CORDON_GATEWAY_URL): no backend secret enters the command')
    .argument('[command...]', 'the command to run, after --')
    .passThroughOptions()
    .action(
      action(ctx, async ({ args: [command], opts }) => {
        const argv = command as unknown as string[];
        if (!argv?.length) throw usage('give the command to run after --, e.g. cordon exec --scope docs:read --task t1 -- ./agent.sh');
        const e = env();
        const set = (k: string) => Boolean(e[k]?.trim());
        const clientId = e.CORDON_CLIENT_ID?.trim() ?? '';
        const clientSecret = e.CORDON_CLIENT_SECRET?.trim() || undefined;
        // exec.ts (through the SDK) also accepts a private key, a bootstrap token or a federated token instead of a secret.
        const other = ['CORDON_PRIVATE_KEY_FILE', 'CORDON_BOOTSTRAP_TOKEN', 'CORDON_FEDERATED_TOKEN_FILE'].some(set);
        if (!clientId && (clientSecret || set('CORDON_PRIVATE_KEY_FILE'))) throw new ConfigError('CORDON_CLIENT_ID', "must be set to the agent's client_id");
        if (!clientSecret && !other)
          throw new ConfigError(
            'CORDON_CLIENT_ID',
            'no agent credentials: set CORDON_CLIENT_ID and CORDON_CLIENT_SECRET (or CORDON_PRIVATE_KEY_FILE, CORDON_BOOTSTRAP_TOKEN, CORDON_FEDERATED_TOKEN_FILE)',
          );
        const issuer = issuerUrl();
        // Loaded on use: the SDK and the child-process plumbing are exec's alone.
        const mod = await import('./exec.ts');
        const gateway = opts.gateway ? (e.CORDON_GATEWAY_URL?.trim() || 'http://127.0.0.1:8081').replace(/\/+$/, '') : undefined;
        return await mod.runExec({ issuer, clientId, clientSecret, scope: opts.scope, task: opts.task, creds: opts.cred as string[], command: argv, gateway });
      }),
    );
}
