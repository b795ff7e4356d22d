/**
 * Gateway keys: an AWS access key pair that is valid only at Cordon's gateway, for one token.
 *
 * Stateless: the access key id carries the token's jti (`CGW` + RFC 4648 base32 of the jti, so the
 * id is upper-case letters and digits like an AWS key id, and never holds the `/` that separates a
 * SigV4 credential scope), and the secret is an HMAC of the id under a key derived from the
 * broker's secret-hash key. The gateway recomputes the secret from the id alone, then maps the id
 * to its jti and judges that token as it judges any token: the key works only while the token is
 * live (not expired, not revoked, session open), and dies with it. Nothing is stored.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { isWellFormedId } from '../ids.ts';

export interface GatewayKeys {
  accessKeyId: string;
  secretAccessKey: string;
}

const PREFIX = 'CGW';
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const KEY_ID_PATTERN = /^CGW[A-Z2-7]{2,103}$/;

/** HKDF with its own label: the derived key is unrelated to the client-secret hashes made with the same root key. */
const derived = new WeakMap<Buffer, Buffer>();
function gatewayKeyRoot(secretHashKey: Buffer): Buffer {
  let k = derived.get(secretHashKey);
  if (!k) {
    k = Buffer.from(hkdfSync('sha256', secretHashKey, Buffer.alloc(0), 'cordon gateway access keys v1', 32));
    derived.set(secretHashKey, k);
  }
  return k;
}

function base32(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(acc << (5 - bits)) & 31];
  return out;
}

function unbase32(text: string): Buffer | undefined {
  const out: number[] = [];
  let bits = 0;
  let acc = 0;
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) return undefined;
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((acc >>> (bits - 8)) & 255);
      bits -= 8;
    }
    acc &= (1 << bits) - 1;
  }
  return Buffer.from(out);
}

/** The secret of an access key id: the gateway recomputes it from the id, so it is never stored. */
export function gatewayKeySecret(secretHashKey: Buffer, accessKeyId: string): string {
  // 30 bytes: 40 base64url characters, the length of an AWS secret access key.
  return createHmac('sha256', gatewayKeyRoot(secretHashKey)).update(accessKeyId).digest().subarray(0, 30).toString('base64url');
}

/** Gateway keys for the token `jti` (an id of the broker's shape, `[A-Za-z0-9_-]{1,64}`). */
export function mintGatewayKeys(secretHashKey: Buffer, jti: string): GatewayKeys {
  if (!isWellFormedId(jti)) throw new Error('gateway keys: the jti is not a well-formed id');
  const accessKeyId = `${PREFIX}${base32(Buffer.from(jti, 'latin1'))}`;
  return { accessKeyId, secretAccessKey: gatewayKeySecret(secretHashKey, accessKeyId) };
}

/** The jti a gateway access key id names, or undefined when it is not one (only the canonical encoding is accepted). */
export function parseGatewayKeyId(accessKeyId: string): string | undefined {
  if (typeof accessKeyId !== 'string' || !KEY_ID_PATTERN.test(accessKeyId)) return undefined;
  const bytes = unbase32(accessKeyId.slice(PREFIX.length));
  if (!bytes) return undefined;
  const jti = bytes.toString('latin1');
  if (!isWellFormedId(jti) || `${PREFIX}${base32(bytes)}` !== accessKeyId) return undefined;
  return jti;
}

/** Is `presented` the secret of `accessKeyId`? Constant time. */
export function gatewaySecretMatches(secretHashKey: Buffer, accessKeyId: string, presented: string): boolean {
  const want = Buffer.from(gatewayKeySecret(secretHashKey, accessKeyId));
  const got = Buffer.from(String(presented));
  return got.length === want.length && timingSafeEqual(got, want);
}
