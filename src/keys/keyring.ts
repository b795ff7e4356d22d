import { randomBytes, createHmac, timingSafeEqual, type KeyObject, createPrivateKey, createPublicKey } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';
import type { Clock } from '../clock.ts';
import type { Db, Q } from '../store/db.ts';
import { transact } from '../store/db.ts';
import { type KeyInfo, type SigningAlg, signingKeys } from '../store/signing-keys.ts';
import { tokens } from '../store/tokens.ts';
import { appendAudit } from '../store/audit-chain.ts';

export type { KeyInfo, SigningAlg } from '../store/signing-keys.ts';
export const SIGNING_ALGS: readonly SigningAlg[] = ['EdDSA', 'ES256'];

export const listKeys = (q: Q): Promise<KeyInfo[]> => signingKeys.list(q);

function ensureDir(dir: string): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** Writes a private file readable by the broker's user only. */
function writePrivate(path: string, data: string | Buffer): void {
  writeFileSync(path, data, { mode: 0o600 });
  chmodSync(path, 0o600); // the mode option does not apply when the file already existed
}

/**
 * Creates a key pair: the private JWK goes to disk first (mode 0600), then the public half and
 * its audit row commit together. A crash in between leaves only an unused file.
 */
async function createKey(
  db: Db,
  keyDir: string,
  alg: SigningAlg,
  clock: Clock,
  event: 'key.create' | 'key.rotate',
  retire?: { publishUntil: number },
): Promise<KeyInfo> {
  ensureDir(keyDir);
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
  const pub = await exportJWK(publicKey);
  const kid = (await calculateJwkThumbprint(pub)).slice(0, 16);
  const priv = await exportJWK(privateKey);
  const file = join(keyDir, `${kid}.jwk.json`);
  writePrivate(file, JSON.stringify({ ...priv, kid, alg, use: 'sig' }));
  const publicJwk: JWK = { ...pub, kid, alg, use: 'sig' };
  const at = clock.now();
  await transact(db, async (tx) => {
    if (retire) {
      await signingKeys.retireActive(tx, at, retire.publishUntil);
    }
    await signingKeys.insertActive(tx, { kid, alg, publicJwk, createdAt: at });
    await appendAudit(tx, {
      at,
      event,
      decision: 'info',
      params: { kid, alg, ...(retire ? { retired_publish_until: new Date(retire.publishUntil).toISOString() } : {}) },
    });
  }).catch((e: unknown) => {
    rmSync(file, { force: true }); // the key never became known: its private half goes
    throw e;
  });
  return { kid, alg, status: 'active', publicJwk, createdAt: at, retiredAt: null, publishUntil: null };
}

/**
 * First start: one active key. Later starts: nothing. When several processes start at once on a
 * fresh database, the one-active-key index lets exactly one insert win; the others use its key.
 */
export async function ensureSigningKey(db: Db, keyDir: string, alg: SigningAlg, clock: Clock): Promise<void> {
  if (await signingKeys.active(db)) return;
  try {
    await createKey(db, keyDir, alg, clock, 'key.create');
  } catch (e) {
    if (!(await signingKeys.active(db))) throw e;
  }
}

/**
 * Adds a new active key and retires the old one. The new key is published at once and signs
 * from KEY_ACTIVATION_MS later (see Keyring.reload); the old one keeps signing until then and
 * stays published until every token it signed, or may still sign on a replica that has not
 * reloaded yet, has expired (`longestTokenTtlMs` is the longest token_ttl).
 */
export async function rotateSigningKey(db: Db, keyDir: string, alg: SigningAlg, clock: Clock, longestTokenTtlMs: number): Promise<KeyInfo> {
  const old = await signingKeys.active(db);
  const lastExpiry = old ? await tokens.maxExpiryByKid(db, old.kid) : 0;
  const lastSigning = clock.now() + KEY_ACTIVATION_MS + KEYRING_RELOAD_MS;
  const publishUntil = Math.max(lastExpiry, lastSigning + longestTokenTtlMs) + KEYRING_RELOAD_MS;
  return createKey(db, keyDir, alg, clock, 'key.rotate', { publishUntil });
}

/** How often a running broker re-reads the key table, so a rotation by the CLI is picked up. */
export const KEYRING_RELOAD_MS = 10_000;

/**
 * A rotated-in key signs only this long after it was created. Every replica re-reads the key
 * table at least once per KEYRING_RELOAD_MS, so by then all of them publish and accept the new
 * key: no replica meets a token signed with a kid it does not know yet (Vault and SPIRE stage
 * new keys the same way).
 */
export const KEY_ACTIVATION_MS = KEYRING_RELOAD_MS + 2_000;

/** At most one extra reload per second for tokens naming a kid this broker does not know. */
const UNKNOWN_KID_RELOAD_MS = 1_000;

export interface ActiveKey {
  kid: string;
  alg: SigningAlg;
  privateKey: KeyObject;
}

/** The in-memory view a running broker signs and verifies with. */
export class Keyring {
  #active!: ActiveKey;
  #verify = new Map<string, { alg: SigningAlg; key: KeyObject }>();
  #jwks: { keys: JWK[] } = { keys: [] };
  #reloadDueAt = 0;
  #unknownKidReloadAt = -Infinity;
  readonly #db: Db;
  readonly #keyDir: string;
  readonly #clock: Clock;

  private constructor(db: Db, keyDir: string, clock: Clock) {
    this.#db = db;
    this.#keyDir = keyDir;
    this.#clock = clock;
  }

  static async load(db: Db, keyDir: string, clock: Clock): Promise<Keyring> {
    const k = new Keyring(db, keyDir, clock);
    await k.reload();
    return k;
  }

  /**
   * Re-reads the key table. Pass the caller's transaction when inside one: on SQLite the pool has
   * a single connection, so a read through the pool from inside a transaction would wait forever.
   */
  async reload(q: Q = this.#db): Promise<void> {
    const now = this.#clock.now();
    const rows = await listKeys(q);
    const active = rows.find((r) => r.status === 'active');
    if (!active) throw new Error('no active signing key: run `cordon init`');
    const activatesAt = active.createdAt + KEY_ACTIVATION_MS;
    // Until the new key activates, the key it replaced signs (when this broker holds its private half).
    const replaced =
      now < activatesAt ? rows.find((r) => r.status === 'retired' && r.retiredAt === active.createdAt && existsSync(this.#privateFile(r.kid))) : undefined;
    const signer = replaced ?? active;
    const file = this.#privateFile(signer.kid);
    if (!existsSync(file)) throw new Error(`private key for kid ${signer.kid} is missing from ${this.#keyDir}`);
    const jwk = JSON.parse(readFileSync(file, 'utf8'));
    const privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
    const published = rows.filter((r) => r.status === 'active' || (r.publishUntil !== null && r.publishUntil > now));
    const verify = new Map<string, { alg: SigningAlg; key: KeyObject }>();
    for (const r of published) verify.set(r.kid, { alg: r.alg, key: createPublicKey({ key: r.publicJwk as never, format: 'jwk' }) });
    this.#active = { kid: signer.kid, alg: signer.alg, privateKey };
    this.#verify = verify;
    this.#jwks = { keys: published.map((r) => r.publicJwk) };
    this.#reloadDueAt = replaced ? Math.min(now + KEYRING_RELOAD_MS + 1, activatesAt) : now + KEYRING_RELOAD_MS + 1;
  }

  #privateFile(kid: string): string {
    return join(this.#keyDir, `${kid}.jwk.json`);
  }

  /** Re-reads keys when the cached view is older than the reload interval, or a staged key activates. Cheap to call per request. */
  async fresh(q?: Q): Promise<this> {
    if (this.#clock.now() >= this.#reloadDueAt) await this.reload(q);
    return this;
  }

  /**
   * The verification key for `kid`; for a kid this broker does not know, the key table is read
   * again first (at most once a second), in case another replica or the CLI added it since.
   */
  async verificationKeyFor(kid: string, q?: Q): Promise<{ alg: SigningAlg; key: KeyObject } | undefined> {
    await this.fresh(q);
    const known = this.#verify.get(kid);
    if (known) return known;
    const now = this.#clock.now();
    if (now - this.#unknownKidReloadAt < UNKNOWN_KID_RELOAD_MS) return undefined;
    this.#unknownKidReloadAt = now;
    await this.reload(q);
    return this.#verify.get(kid);
  }

  active(): ActiveKey {
    return this.#active;
  }
  verificationKey(kid: string): { alg: SigningAlg; key: KeyObject } | undefined {
    return this.#verify.get(kid);
  }
  /** Public keys only: the active key and retired keys still inside their publish window. */
  jwks(): { keys: JWK[] } {
    return this.#jwks;
  }
}

const SECRET_HASH_KEY_FILE = 'client-secret-hmac.key';

/**
 * The key directory and the private files in it (signing keys, the secret-hash key) with the
 * widest mode each should have, for `cordon status`: 0700 and 0600. Empty when the directory is missing.
 */
export function keyFiles(keyDir: string): Array<{ path: string; expected: number }> {
  if (!existsSync(keyDir)) return [];
  const names = readdirSync(keyDir)
    .filter((n) => n.endsWith('.jwk.json') || n === SECRET_HASH_KEY_FILE)
    .sort();
  return [{ path: keyDir, expected: 0o700 }, ...names.map((n) => ({ path: join(keyDir, n), expected: 0o600 }))];
}

/** The key for hashing client secrets (HMAC-SHA256), created once beside the signing keys. */
export function loadSecretHashKey(keyDir: string): Buffer {
  ensureDir(keyDir);
  const file = join(keyDir, SECRET_HASH_KEY_FILE);
  if (!existsSync(file)) writePrivate(file, randomBytes(32).toString('base64url'));
  return Buffer.from(readFileSync(file, 'utf8').trim(), 'base64url');
}

export const hashSecret = (key: Buffer, secret: string): string => createHmac('sha256', key).update(secret).digest('hex');

export function secretMatches(key: Buffer, secret: string, storedHash: string | null): boolean {
  if (!storedHash) return false;
  const a = Buffer.from(hashSecret(key, secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}
