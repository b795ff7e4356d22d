/** The broker's own Vault login, by the configured method (token, AppRole or JWT). */
import { readFileSync } from 'node:fs';
import type { VaultConfig } from '../config/index.ts';
import { ProviderError } from './provider.ts';

export interface Login {
  token: string;
  /** The broker token's own policies: parents get exactly these (a child's policies must be a subset of its parent's). */
  policies: string[];
  /** The token carries Vault's root policy. */
  root: boolean;
  /** null: never expires. */
  expiresAt: number | null;
  ttlSec: number;
  renewable: boolean;
}

export interface VaultAuth {
  client_token: string;
  accessor: string;
  policies?: string[];
  token_policies?: string[];
  lease_duration: number;
  renewable?: boolean;
  num_uses?: number;
  orphan?: boolean;
}

export const ROOT_REFUSAL =
  'is a Vault root token: the broker does not run on root. Give it a token with the broker policy and a token role (VAULT_TOKEN_ROLE; see the README), or set CORDON_VAULT_ALLOW_ROOT=1 to accept root';

/** What logging in needs of the provider: its error-mapping call wrapper and raw reads and writes. */
export interface LoginIo {
  call<T>(op: string, fn: () => Promise<T>, loginVar?: string): Promise<T>;
  read(path: string, token: string): Promise<any>;
  write(path: string, body: Record<string, string>): Promise<any>;
  authOf(res: unknown, op: string): VaultAuth;
  now(): number;
}

/** A fresh login (not a renewal): the token's policies and life, `root` not yet decided. */
export async function logIn(cfg: VaultConfig, io: LoginIo): Promise<Login> {
  const auth = cfg.auth;
  if (auth.method === 'token') {
    const r = await io.call('auth/token/lookup-self', () => io.read('auth/token/lookup-self', auth.token), 'VAULT_TOKEN');
    const d = r?.data;
    if (!d || !Array.isArray(d.policies)) throw new ProviderError('vault', 'bad_answer', 'Vault answered auth/token/lookup-self without policies');
    const ttl = Number(d.ttl ?? 0);
    return {
      token: auth.token,
      policies: d.policies,
      root: false,
      ttlSec: ttl,
      expiresAt: ttl > 0 ? io.now() + ttl * 1000 : null,
      renewable: Boolean(d.renewable),
    };
  }
  const path = `auth/${auth.mount}/login`;
  let body: Record<string, string>;
  if (auth.method === 'approle') body = { role_id: auth.roleId, secret_id: auth.secretId };
  else {
    let jwt: string;
    try {
      jwt = readFileSync(auth.jwtFile, 'utf8').trim(); // re-read: projected service-account tokens rotate
    } catch {
      throw new ProviderError('vault', 'misconfigured', 'the broker cannot read VAULT_JWT_FILE for its Vault login');
    }
    body = { role: auth.role, jwt };
  }
  const r = await io.call(path, () => io.write(path, body), auth.method === 'approle' ? 'VAULT_ROLE_ID/VAULT_SECRET_ID' : 'VAULT_JWT_ROLE/VAULT_JWT_FILE');
  const a = io.authOf(r, path);
  const ttl = a.lease_duration;
  return {
    token: a.client_token,
    policies: a.token_policies ?? a.policies ?? [],
    root: false,
    ttlSec: ttl,
    expiresAt: ttl > 0 ? io.now() + ttl * 1000 : null,
    renewable: a.renewable ?? false,
  };
}
