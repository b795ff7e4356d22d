import { randomBytes } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { DPOP_TYP } from '../protocol/constants.ts';
import { athOf } from '../protocol/dpop.ts';

export { athOf };

export type DpopAlg = 'ES256' | 'EdDSA';

/** RFC 9449 §4.2: htu is the request URL without query and fragment. */
export function htuOf(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
}

/**
 * A DPoP key (RFC 9449): the agent proves possession of it on every request, so a stolen
 * token alone is useless. The private half never leaves this object.
 */
export class DpopKey {
  readonly alg: DpopAlg;
  /** JWK SHA-256 thumbprint of the public key: the `cnf.jkt` a bound token carries. */
  readonly jkt: string;
  readonly publicJwk: JWK;
  readonly #privateKey: CryptoKey;

  private constructor(alg: DpopAlg, privateKey: CryptoKey, publicJwk: JWK, jkt: string) {
    this.alg = alg;
    this.#privateKey = privateKey;
    this.publicJwk = publicJwk;
    this.jkt = jkt;
  }

  /** A fresh, non-extractable key pair. */
  static async generate(alg: DpopAlg = 'ES256'): Promise<DpopKey> {
    const { privateKey, publicKey } = await generateKeyPair(alg, alg === 'EdDSA' ? { crv: 'Ed25519' } : {});
    return DpopKey.fromKeyPair({ privateKey, publicKey }, alg);
  }

  static async fromKeyPair(pair: { privateKey: CryptoKey; publicKey: CryptoKey }, alg: DpopAlg): Promise<DpopKey> {
    const full = await exportJWK(pair.publicKey);
    const publicJwk: JWK = full.kty === 'EC' ? { kty: 'EC', crv: full.crv, x: full.x, y: full.y } : { kty: full.kty, crv: full.crv, x: full.x };
    return new DpopKey(alg, pair.privateKey, publicJwk, await calculateJwkThumbprint(publicJwk));
  }

  /** A proof for one request. `nowMs` comes from the agent's clock. */
  async proof(method: string, url: string, opts: { nowMs: number; accessToken?: string; nonce?: string }): Promise<string> {
    const claims: Record<string, unknown> = { htm: method.toUpperCase(), htu: htuOf(url) };
    if (opts.accessToken !== undefined) claims.ath = athOf(opts.accessToken);
    if (opts.nonce !== undefined) claims.nonce = opts.nonce;
    return new SignJWT(claims)
      .setProtectedHeader({ alg: this.alg, typ: DPOP_TYP, jwk: this.publicJwk })
      .setIssuedAt(Math.floor(opts.nowMs / 1000))
      .setJti(randomBytes(16).toString('base64url'))
      .sign(this.#privateKey);
  }
}
