import type { JWK } from 'jose';
import { type Q, num, numOrNull } from './db.ts';

export type SigningAlg = 'EdDSA' | 'ES256';

export interface KeyInfo {
  kid: string;
  alg: SigningAlg;
  status: 'active' | 'retired';
  publicJwk: JWK;
  createdAt: number;
  retiredAt: number | null;
  publishUntil: number | null;
}

const fromRow = (r: Record<string, unknown>): KeyInfo => ({
  kid: r.kid as string,
  alg: r.alg as SigningAlg,
  status: r.status as KeyInfo['status'],
  publicJwk: JSON.parse(r.public_jwk as string),
  createdAt: num(r.created_at),
  retiredAt: numOrNull(r.retired_at),
  publishUntil: numOrNull(r.publish_until),
});

/** Public halves of the signing keys (private halves live in files, never in the database). At most one is active (migration 003). */
export const signingKeys = {
  async list(q: Q): Promise<KeyInfo[]> {
    return (await q('signing_keys').orderBy('created_at')).map(fromRow);
  },
  async active(q: Q): Promise<KeyInfo | undefined> {
    const r = await q('signing_keys').where({ status: 'active' }).first();
    return r ? fromRow(r) : undefined;
  },
  /** Retires the active key, published until `publishUntil`. */
  async retireActive(q: Q, at: number, publishUntil: number): Promise<void> {
    await q('signing_keys').where({ status: 'active' }).update({ status: 'retired', retired_at: at, publish_until: publishUntil });
  },
  async insertActive(q: Q, k: { kid: string; alg: SigningAlg; publicJwk: JWK; createdAt: number }): Promise<void> {
    await q('signing_keys').insert({
      kid: k.kid,
      alg: k.alg,
      public_jwk: JSON.stringify(k.publicJwk),
      status: 'active',
      created_at: k.createdAt,
      retired_at: null,
      publish_until: null,
    });
  },
};
