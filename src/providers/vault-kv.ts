/**
 * Vault KV v2 credentials (`kv: secret/data/NAME`): a static third-party secret (an API key, a
 * PAT) read with the broker's own Vault login. Nothing is created for the request, so there is no
 * parent token, no lease and nothing to revoke; policy lint lets only the gateway hold one
 * (`deliver: gateway`), and `expiresAt` is how long the gateway may cache it.
 */
import type { IssueRequest, IssueResult } from './provider.ts';
import { ProviderError } from './provider.ts';

/** What a KV read needs of the provider: its error-mapping call wrapper, a raw read and the clock. */
export interface KvIo {
  call<T>(op: string, fn: () => Promise<T>): Promise<T>;
  read(path: string, token: string): Promise<any>;
  now(): number;
}

export const KV_NOT_REVOCABLE =
  'a KV secret read with the broker’s own token: nothing was made for it, so nothing can be revoked; the value stays valid until it is rotated in Vault';

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads `path` (KV v2: `{ data: { data, metadata } }`); the secret's fields are the credential. */
export async function readKv(io: KvIo, path: string, brokerToken: string, req: IssueRequest, ttlSec: number): Promise<IssueResult> {
  const sent = io.now();
  const res = await io.call(path, () => io.read(path, brokerToken));
  const data: unknown = res?.data;
  if (!isRecord(data) || !isRecord(data.metadata) || !isRecord(data.data)) {
    const deleted = isRecord(data) && isRecord(data.metadata) && (data.metadata.destroyed === true || Boolean(data.metadata.deletion_time));
    throw new ProviderError(
      'vault',
      deleted ? 'not_found' : 'bad_answer',
      deleted
        ? `Vault's latest version of ${path} is deleted: write the secret again`
        : `Vault answered ${path} without a KV v2 secret (data.data and data.metadata): is its mount KV version 2?`,
    );
  }
  const version = typeof data.metadata.version === 'number' ? data.metadata.version : undefined;
  return {
    credentials: { ...data.data },
    // Never past the token it is read for, whatever the policy's ttl.
    expiresAt: Math.min(sent + ttlSec * 1000, req.tokenExpiresAt),
    static: true,
    handle: { kind: 'static' },
    details: { kv: path, ttl_sec: ttlSec, static: true, ...(version !== undefined ? { version } : {}) },
  };
}
