/**
 * Fixture for the backend-credential suites (not a test file: mocha runs *.test.ts only):
 * a test broker whose Vault and STS providers talk, through node-vault and the AWS SDK, to the
 * protocol doubles, sharing the broker's ManualClock.
 */
import { VaultDouble } from './doubles/vault.ts';
import { StsDouble } from './doubles/sts.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { policyDir, register, type Agent } from './delegation.kit.ts';
import { credentialsRoute } from '../src/http/credentials.ts';
import { startBackendCredentials } from '../src/credentials/sweep.ts';
import { credentials, type CredentialRow } from '../src/store/credentials.ts';

export const ROLE_ARN = 'arn:aws:iam::123456789012:role/agent-reports';
/** A second role, never revoked through IAM (its one credential sets revoke_via_iam: false). */
export const ROLE_ARN_RO = 'arn:aws:iam::123456789012:role/agent-readonly';
/** A resource server the credential-test agents may ask tokens for. */
export const RS_AUDIENCE = 'https://tickets.internal';
/** The Vault token role agent tokens are created through (allowed_policies: tickets-read). */
export const VAULT_TOKEN_ROLE = 'cordon-agents';
export const SESSION_POLICY = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: ['s3:GetObject'], Resource: ['arn:aws:s3:::reports/*'] }] };
const sp = JSON.stringify(SESSION_POLICY);

/** Test personas: an owner (root) with Vault and STS credentials, a worker it delegates to, and a scope-less one. */
export const POLICIES: Record<string, string> = {
  'creds-owner.yaml': `
name: creds-owner
description: Root agent of the credential tests.
token_ttl: 30m
session_ttl: 1h
audiences: [${RS_AUDIENCE}]
scopes: [work:read, cred:vault-token, cred:vault-db, cred:vault-kv, cred:vault-admin, cred:s3, cred:s3-iam, cred:s3-all]
delegation:
  max_depth: 1
  scopes: [work:read, cred:vault-token, cred:s3-iam]
credentials:
  vault-token: { provider: vault, vault_policies: [tickets-read], ttl: 5m }
  vault-admin: { provider: vault, vault_policies: [tickets-admin], ttl: 5m }
  vault-db: { provider: vault, path: database/creds/tickets-ro, ttl: 10m }
  vault-kv: { provider: vault, path: secret/data/tickets/api, ttl: 10m }
  s3: { provider: aws-sts, role_arn: "${ROLE_ARN_RO}", session_policy: ${sp}, ttl: 30m, revoke_via_iam: false }
  s3-iam: { provider: aws-sts, role_arn: "${ROLE_ARN}", session_policy: ${sp}, ttl: 30m }
  s3-all: { provider: aws-sts, role_arn: "${ROLE_ARN}", ttl: 30m }
`,
  'creds-worker.yaml': `
name: creds-worker
description: Sub-agent of the credential tests.
token_ttl: 5m
session_ttl: 1h
scopes: [work:read, cred:vault-token, cred:vault-db, cred:s3-iam]
credentials:
  vault-token: { provider: vault, vault_policies: [tickets-read], ttl: 5m }
  vault-db: { provider: vault, path: database/creds/tickets-ro, ttl: 10m }
  s3-iam: { provider: aws-sts, role_arn: "${ROLE_ARN}", ttl: 30m }
`,
  'creds-none.yaml': `
name: creds-none
description: No credentials at all.
scopes: [work:read]
`,
};

export interface CredFixture {
  tb: TestBroker;
  vault: VaultDouble;
  sts: StsDouble;
  brokerVaultToken: string;
  stop(): Promise<void>;
  agent(name: string, policy: string): Promise<Agent>;
  cred(name: string, token: string, headers?: Record<string, string>, body?: string): Promise<{ status: number; body: any; headers: Headers }>;
  rows(sid?: string): Promise<CredentialRow[]>;
  row(id: string): Promise<CredentialRow>;
}

const AWS_ENV = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE'] as const;

/** Starts both doubles and a broker wired to them. `timeoutMs` is both backends' timeout; `databaseUrl` and `env` go to the test broker. */
export async function credFixture(
  opts: { timeoutMs?: number; providers?: boolean; policies?: Record<string, string>; databaseUrl?: string; env?: Record<string, string> } = {},
): Promise<CredFixture> {
  const vault = new VaultDouble('root-token');
  await vault.start();
  // Least privilege, as the README sets it up: the broker's token holds only the broker policy (not
  // even default) and mints agent tokens through a token role that bounds what they may carry.
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
  vault.setPolicyPaths('tickets-read', [
    { path: 'database/creds/tickets-ro', capabilities: ['read'] },
    { path: 'secret/data/tickets/*', capabilities: ['read'] },
  ]);
  vault.addTokenRole(VAULT_TOKEN_ROLE, { allowedPolicies: ['tickets-read'], orphan: false, renewable: false, tokenExplicitMaxTtlSec: 3600 });
  vault.addDatabaseRole('tickets-ro', 3600);
  vault.putKv('tickets/api', { api_key: 'k-123', endpoint: 'https://tickets.internal' });
  const brokerVaultToken = vault.mintToken({ policies: ['broker'], addDefault: false, displayName: 'cordon-broker' }).token;

  const sts = new StsDouble();
  await sts.start();
  sts.addRole(ROLE_ARN, { maxSessionDuration: 43200 });
  sts.addRole(ROLE_ARN_RO, { maxSessionDuration: 43200 });

  // The SDK's credential chain reads the environment: the double's test key.
  const saved = Object.fromEntries(AWS_ENV.map((k) => [k, process.env[k]]));
  process.env.AWS_ACCESS_KEY_ID = sts.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = sts.secretAccessKey;
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;

  const t = String(opts.timeoutMs ?? 2000);
  const tb = await startTestBroker({
    policyDir: policyDir({ ...POLICIES, ...opts.policies }),
    databaseUrl: opts.databaseUrl,
    env: {
      ...opts.env,
      VAULT_ADDR: vault.url,
      VAULT_TOKEN: brokerVaultToken,
      VAULT_TOKEN_ROLE,
      VAULT_TIMEOUT_MS: t,
      AWS_REGION: 'us-east-1',
      AWS_ENDPOINT_URL_STS: sts.url,
      AWS_ENDPOINT_URL_IAM: sts.url,
      CORDON_AWS_TIMEOUT_MS: t,
    },
    ext: { routes: [credentialsRoute] },
  });
  vault.now = () => tb.clock.now();
  sts.now = () => tb.clock.now();
  const sub = opts.providers === false ? undefined : await startBackendCredentials(tb.b, { sweep: false });

  return {
    tb,
    vault,
    sts,
    brokerVaultToken,
    async stop() {
      await sub?.stop();
      await tb.close();
      await vault.stop();
      await sts.stop();
      for (const k of AWS_ENV) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    },
    agent: (name, policy) => register(tb, name, policy),
    async cred(name, token, headers = {}, body) {
      const r = await fetch(`${tb.url}/credentials/${name}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, ...headers },
        ...(body !== undefined ? { body } : {}),
      });
      const text = await r.text();
      let parsed: any = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      return { status: r.status, body: parsed, headers: r.headers };
    },
    async rows(sid) {
      const q = tb.b.db('credentials').orderBy('created_at');
      const all = await (sid ? q.where({ sid }) : q);
      return Promise.all(all.map((r: { id: string }) => credentials.get(tb.b.db, r.id).then((x) => x!)));
    },
    async row(id) {
      const r = await credentials.get(tb.b.db, id);
      if (!r) throw new Error(`no credential row ${id}`);
      return r;
    },
  };
}

/** The credential row id of an answer (from the audit row that recorded it). */
export async function rowIdOf(f: CredFixture, body: { name: string; expires_at: string }, sid: string): Promise<string> {
  const rows = (await f.rows(sid)).filter((r) => r.name === body.name && r.expiresAt === Date.parse(body.expires_at));
  if (rows.length !== 1) throw new Error(`expected one row for ${body.name}, found ${rows.length}`);
  return rows[0].id;
}
