import { existsSync, readFileSync } from 'node:fs';
import { parse as parseDotenv } from 'dotenv';
import { ConfigError } from '../errors.ts';

/** Everything the broker reads from its environment, validated once at start. */
export interface Config {
  issuer: string;
  host: string;
  port: number;
  databaseUrl: string;
  policyDir: string;
  keyDir: string;
  /** Where signed audit checkpoints are appended: storage the database's writers cannot write. */
  auditDir: string;
  keyAlg: 'EdDSA' | 'ES256';
  bodyLimitBytes: number;
  clockSkewSec: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  sweepIntervalSec: number;
  /** How long ended sessions (with their tokens and credentials) and spent feed, IAM deny and bootstrap rows are kept before the sweeper deletes them (CORDON_RETENTION). The audit log is kept whole. */
  retentionMs: number;
  /** When set, `GET /metrics` wants `Authorization: Bearer <this>` (Prometheus' bearer_token). */
  metricsToken?: string;
  /** The gateway's listener (`CORDON_GATEWAY_PORT`; null when `off`) and its public base URL (a token's `aud` may name it). */
  gatewayPort: number | null;
  gatewayUrl: string;
  /** Where alarms are POSTed as JSON (CORDON_ALERT_WEBHOOK), when set. */
  alertWebhook?: string;
  vault?: VaultConfig;
  sts?: StsConfig;
}

export interface VaultConfig {
  addr: string;
  namespace?: string;
  timeoutMs: number;
  /** VAULT_TOKEN_ROLE: agent tokens are created through `auth/token/create/<role>`, whose allowed_policies bound them. */
  tokenRole?: string;
  /** CORDON_VAULT_ALLOW_ROOT=1: the operator accepts a broker token carrying Vault's root policy. */
  allowRoot?: boolean;
  auth:
    | { method: 'token'; token: string }
    | { method: 'approle'; roleId: string; secretId: string; mount: string }
    | { method: 'jwt'; role: string; jwtFile: string; mount: string };
}

export interface StsConfig {
  region: string;
  endpoint?: string;
  iamEndpoint?: string;
  timeoutMs: number;
}

/** Defaults, also the content of .env.example (kept in sync by a test). */
export const DEFAULTS: Record<string, string> = {
  CORDON_ISSUER: 'http://127.0.0.1:8080',
  HOST: '127.0.0.1',
  PORT: '8080',
  DATABASE_URL: 'sqlite://./data/cordon.sqlite',
  CORDON_POLICY_DIR: './policies',
  CORDON_KEY_DIR: './data/keys',
  CORDON_AUDIT_DIR: './data/audit',
  CORDON_KEY_ALG: 'EdDSA',
  CORDON_BODY_LIMIT: '65536',
  CORDON_CLOCK_SKEW: '30',
  CORDON_LOG_LEVEL: 'info',
  CORDON_SWEEP_INTERVAL: '30',
  CORDON_RETENTION: '7d',
  CORDON_GATEWAY_PORT: '8081',
  CORDON_GATEWAY_URL: 'http://127.0.0.1:8081',
};

/** Optional variables with no default: absent means the feature is off. */
export const OPTIONAL = [
  'CORDON_METRICS_TOKEN',
  'CORDON_ALERT_WEBHOOK',
  'VAULT_ADDR',
  'VAULT_TOKEN',
  'VAULT_ROLE_ID',
  'VAULT_SECRET_ID',
  'VAULT_APPROLE_MOUNT',
  'VAULT_JWT_ROLE',
  'VAULT_JWT_FILE',
  'VAULT_JWT_MOUNT',
  'VAULT_NAMESPACE',
  'VAULT_TIMEOUT_MS',
  'VAULT_TOKEN_ROLE',
  'CORDON_VAULT_ALLOW_ROOT',
  'AWS_REGION',
  'AWS_ENDPOINT_URL_STS',
  'AWS_ENDPOINT_URL_IAM',
  'CORDON_AWS_TIMEOUT_MS',
] as const;

type Env = Record<string, string | undefined>;

/** process.env wins over .env, as dotenv does. */
export function readEnv(cwd = process.cwd(), env: Env = process.env): Env {
  const file = `${cwd}/.env`;
  const fromFile = existsSync(file) ? parseDotenv(readFileSync(file)) : {};
  return { ...fromFile, ...env };
}

const int = (env: Env, name: string, min: number, max: number): number => {
  const raw = (env[name] ?? DEFAULTS[name] ?? '').trim();
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
};

const str = (env: Env, name: string): string => {
  const v = env[name] ?? DEFAULTS[name];
  if (v === undefined || v.trim() === '') throw new ConfigError(name, 'must not be empty');
  return v.trim();
};

const url = (env: Env, name: string, protocols: string[]): string => {
  const v = str(env, name);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError(name, `is not a valid URL: "${v}"`);
  }
  if (!protocols.includes(u.protocol)) throw new ConfigError(name, `must use ${protocols.join(' or ')}, got ${u.protocol}`);
  return v;
};

export function loadConfig(env: Env = readEnv()): Config {
  const issuer = url(env, 'CORDON_ISSUER', ['http:', 'https:']).replace(/\/+$/, '');
  // RFC 8414 §2: the issuer has no query and no fragment.
  if (/[?#]/.test(issuer)) throw new ConfigError('CORDON_ISSUER', 'must not have a query or fragment');
  const databaseUrl = str(env, 'DATABASE_URL');
  if (!/^(sqlite:|postgres:|postgresql:)/.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL', `must start with sqlite:// or postgres://, got "${databaseUrl.split(':')[0]}:"`);
  }
  if (!databaseUrl.startsWith('sqlite:')) {
    // pg's own parser quietly drops what it cannot read (a port of 99999 loses the user name too).
    let u: URL | undefined;
    try {
      u = new URL(databaseUrl);
    } catch {
      u = undefined;
    }
    if (!u || !u.hostname) throw new ConfigError('DATABASE_URL', 'is not a valid postgres:// URL (postgres://user@host:port/database)');
  }
  const keyAlg = str(env, 'CORDON_KEY_ALG');
  if (keyAlg !== 'EdDSA' && keyAlg !== 'ES256') throw new ConfigError('CORDON_KEY_ALG', `must be EdDSA or ES256, got "${keyAlg}"`);
  const logLevel = str(env, 'CORDON_LOG_LEVEL');
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  if (!levels.includes(logLevel)) throw new ConfigError('CORDON_LOG_LEVEL', `must be one of ${levels.join(', ')}`);
  return {
    issuer,
    host: str(env, 'HOST'),
    port: int(env, 'PORT', 0, 65535),
    databaseUrl,
    policyDir: str(env, 'CORDON_POLICY_DIR'),
    keyDir: str(env, 'CORDON_KEY_DIR'),
    auditDir: str(env, 'CORDON_AUDIT_DIR'),
    keyAlg,
    bodyLimitBytes: int(env, 'CORDON_BODY_LIMIT', 1024, 10 * 1024 * 1024),
    clockSkewSec: int(env, 'CORDON_CLOCK_SKEW', 0, 300),
    logLevel: logLevel as Config['logLevel'],
    sweepIntervalSec: int(env, 'CORDON_SWEEP_INTERVAL', 1, 86400),
    retentionMs: retention(env),
    metricsToken: metricsToken(env),
    gatewayPort: (env.CORDON_GATEWAY_PORT ?? DEFAULTS.CORDON_GATEWAY_PORT).trim() === 'off' ? null : int(env, 'CORDON_GATEWAY_PORT', 0, 65535),
    gatewayUrl: url(env, 'CORDON_GATEWAY_URL', ['http:', 'https:']).replace(/\/+$/, ''),
    ...(env.CORDON_ALERT_WEBHOOK ? { alertWebhook: url(env, 'CORDON_ALERT_WEBHOOK', ['http:', 'https:']) } : {}),
    vault: vaultConfig(env),
    sts: stsConfig(env),
  };
}

/** CORDON_RETENTION: whole seconds, or a number with one unit (90s, 30m, 12h, 7d); at least a minute. */
function retention(env: Env): number {
  const raw = str(env, 'CORDON_RETENTION');
  const m = /^(\d{1,9})([smhd]?)$/.exec(raw);
  if (!m) throw new ConfigError('CORDON_RETENTION', `must be a duration such as 7d, 12h, 30m or 3600 (seconds), got "${raw}"`);
  const sec = Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  if (sec < 60 || sec > 3650 * 86400) throw new ConfigError('CORDON_RETENTION', `must be between 1 minute and 10 years, got "${raw}"`);
  return sec * 1000;
}

function metricsToken(env: Env): string | undefined {
  const v = env.CORDON_METRICS_TOKEN;
  if (v === undefined || v === '') return undefined;
  // RFC 6750 token68 characters only, and long enough not to be guessed.
  if (!/^[A-Za-z0-9\-._~+/]{32,512}=*$/.test(v))
    throw new ConfigError('CORDON_METRICS_TOKEN', 'must be 32 to 512 characters of A-Z a-z 0-9 - . _ ~ + / (e.g. openssl rand -hex 32)');
  return v;
}

function vaultConfig(env: Env): VaultConfig | undefined {
  if (!env.VAULT_ADDR) return undefined;
  const addr = url(env, 'VAULT_ADDR', ['http:', 'https:']);
  const timeoutMs = env.VAULT_TIMEOUT_MS ? int(env, 'VAULT_TIMEOUT_MS', 100, 120000) : 5000;
  const namespace = env.VAULT_NAMESPACE || undefined;
  const tokenRole = env.VAULT_TOKEN_ROLE || undefined;
  // Vault's role-name pattern (framework.GenericNameRegex); the name is spliced into auth/token/create/<role>.
  if (tokenRole !== undefined && !/^\w(?:[\w.-]*\w)?$/.test(tokenRole))
    throw new ConfigError('VAULT_TOKEN_ROLE', `must be a Vault token role name (letters, digits, _ . -), got "${tokenRole}"`);
  const allowRootRaw = (env.CORDON_VAULT_ALLOW_ROOT ?? '').trim();
  if (!['', '0', '1'].includes(allowRootRaw))
    throw new ConfigError('CORDON_VAULT_ALLOW_ROOT', `must be 1 (accept a root VAULT_TOKEN) or 0, got "${allowRootRaw}"`);
  const base = { addr, namespace, timeoutMs, tokenRole, allowRoot: allowRootRaw === '1' };
  if (env.VAULT_TOKEN) return { ...base, auth: { method: 'token', token: env.VAULT_TOKEN } };
  if (env.VAULT_ROLE_ID || env.VAULT_SECRET_ID) {
    if (!env.VAULT_ROLE_ID) throw new ConfigError('VAULT_ROLE_ID', 'is required with VAULT_SECRET_ID');
    if (!env.VAULT_SECRET_ID) throw new ConfigError('VAULT_SECRET_ID', 'is required with VAULT_ROLE_ID');
    return { ...base, auth: { method: 'approle', roleId: env.VAULT_ROLE_ID, secretId: env.VAULT_SECRET_ID, mount: env.VAULT_APPROLE_MOUNT || 'approle' } };
  }
  if (env.VAULT_JWT_ROLE || env.VAULT_JWT_FILE) {
    if (!env.VAULT_JWT_ROLE) throw new ConfigError('VAULT_JWT_ROLE', 'is required with VAULT_JWT_FILE');
    if (!env.VAULT_JWT_FILE || !existsSync(env.VAULT_JWT_FILE)) throw new ConfigError('VAULT_JWT_FILE', 'must name a readable file');
    return { ...base, auth: { method: 'jwt', role: env.VAULT_JWT_ROLE, jwtFile: env.VAULT_JWT_FILE, mount: env.VAULT_JWT_MOUNT || 'jwt' } };
  }
  throw new ConfigError(
    'VAULT_TOKEN',
    'VAULT_ADDR is set but no Vault login is configured (VAULT_TOKEN, VAULT_ROLE_ID/VAULT_SECRET_ID or VAULT_JWT_ROLE/VAULT_JWT_FILE)',
  );
}

function stsConfig(env: Env): StsConfig | undefined {
  if (!env.AWS_REGION) return undefined;
  if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(env.AWS_REGION)) throw new ConfigError('AWS_REGION', `is not an AWS region: "${env.AWS_REGION}"`);
  return {
    region: env.AWS_REGION,
    endpoint: env.AWS_ENDPOINT_URL_STS ? url(env, 'AWS_ENDPOINT_URL_STS', ['http:', 'https:']) : undefined,
    iamEndpoint: env.AWS_ENDPOINT_URL_IAM ? url(env, 'AWS_ENDPOINT_URL_IAM', ['http:', 'https:']) : undefined,
    timeoutMs: env.CORDON_AWS_TIMEOUT_MS ? int(env, 'CORDON_AWS_TIMEOUT_MS', 100, 120000) : 5000,
  };
}
