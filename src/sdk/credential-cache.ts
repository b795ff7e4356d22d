import { CordonSdkError } from './errors.ts';
import { isObject } from './http.ts';
import type { AwsCredentialIdentity, BackendCredential } from './types.ts';

/**
 * Backend credentials by name, handed out until shortly before they expire: `marginSec` before
 * (or at 3/4 of their life when that is shorter). Concurrent fetches of one name share one request.
 */
export class CredentialCache {
  readonly #marginMs: number;
  #entries = new Map<string, { value: BackendCredential; fetchedAt: number }>();
  readonly #inFlight = new Map<string, Promise<BackendCredential>>();

  constructor(marginSec = 60) {
    this.#marginMs = marginSec * 1000;
  }

  /** The cached credential if it is still good at `now` (ms), else the shared fetch. */
  get(name: string, now: number, fetch: () => Promise<BackendCredential>): Promise<BackendCredential> {
    const hit = this.#entries.get(name);
    if (hit) {
      const life = hit.value.expiresAt.getTime() - hit.fetchedAt;
      const margin = Math.min(this.#marginMs, life / 4);
      if (now < hit.value.expiresAt.getTime() - margin) return Promise.resolve(hit.value);
    }
    let p = this.#inFlight.get(name);
    if (!p) {
      p = fetch().finally(() => this.#inFlight.delete(name));
      this.#inFlight.set(name, p);
    }
    return p;
  }

  put(name: string, value: BackendCredential, fetchedAt: number): void {
    this.#entries.set(name, { value, fetchedAt });
  }

  /** Forgets everything (a new session, or the session ended). */
  clear(): void {
    this.#entries.clear();
  }
}

/** A `POST /credentials/:name` answer, checked. */
export function parseCredential(json: unknown, name: string): BackendCredential {
  const what = `credentials ${name}`;
  if (!isObject(json)) throw new CordonSdkError('bad_response', `${what}: the answer is not a JSON object`);
  const { provider, expires_at, lease_id, credentials } = json;
  if (typeof provider !== 'string' || !provider) throw new CordonSdkError('bad_response', `${what}: no provider in the answer`);
  const exp = typeof expires_at === 'string' ? new Date(expires_at) : null;
  if (!exp || Number.isNaN(exp.getTime())) throw new CordonSdkError('bad_response', `${what}: expires_at is missing or not a date`);
  if (!isObject(credentials)) throw new CordonSdkError('bad_response', `${what}: credentials is not an object`);
  return {
    name: typeof json.name === 'string' ? json.name : name,
    provider,
    expiresAt: exp,
    ...(typeof lease_id === 'string' ? { leaseId: lease_id } : {}),
    ...(json.static === true ? { static: true } : {}),
    credentials,
  };
}

/** An `aws-sts` credential in the shape AWS SDK v3 takes. */
export function toAwsIdentity(c: BackendCredential): AwsCredentialIdentity {
  if (c.provider !== 'aws-sts') throw new CordonSdkError('unsupported', `credential ${c.name} comes from ${c.provider}, not aws-sts`);
  const { AccessKeyId, SecretAccessKey, SessionToken, Expiration } = c.credentials;
  if (typeof AccessKeyId !== 'string' || typeof SecretAccessKey !== 'string' || (SessionToken !== undefined && typeof SessionToken !== 'string')) {
    throw new CordonSdkError('bad_response', `credentials ${c.name}: AccessKeyId, SecretAccessKey or SessionToken missing`);
  }
  let expiration = c.expiresAt;
  if (typeof Expiration === 'string' && !Number.isNaN(Date.parse(Expiration))) expiration = new Date(Math.min(Date.parse(Expiration), c.expiresAt.getTime()));
  return { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey, ...(SessionToken ? { sessionToken: SessionToken } : {}), expiration };
}
