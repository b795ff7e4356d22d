import { randomBytes, randomFillSync } from 'node:crypto';

/**
 * 16 random bytes, base64url. Drawn from a buffer refilled from the CSPRNG 4 KiB at a time (as
 * Node's own randomUUID does): one call into OpenSSL per 256 ids instead of one each, which showed
 * in session-start profiles. No byte is ever handed out twice.
 */
const POOL = Buffer.alloc(4096);
let poolOffset = POOL.length;
function random128(): string {
  if (poolOffset + 16 > POOL.length) {
    randomFillSync(POOL);
    poolOffset = 0;
  }
  const out = POOL.toString('base64url', poolOffset, poolOffset + 16);
  poolOffset += 16;
  return out;
}

/** Random, URL-safe identifiers with a readable prefix. 128 bits: unguessable, collision-free in practice. */
export const newId = (prefix: string): string => `${prefix}_${random128()}`;
export const newJti = (): string => random128();
/** Client secrets: 256 bits. */
export const newSecret = (): string => randomBytes(32).toString('base64url');

/** Ids arrive from users and the network; only this shape is ever looked up. Stops quotes, slashes and `..` at the door. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const isWellFormedId = (v: unknown): v is string => typeof v === 'string' && ID_PATTERN.test(v);
