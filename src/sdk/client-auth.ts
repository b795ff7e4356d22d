import { createPrivateKey, randomBytes } from 'node:crypto';
import { SignJWT, importJWK, type CryptoKey, type JWK } from 'jose';
import { CLIENT_ASSERTION_ALGS, CLIENT_ASSERTION_TYPE, WORKLOAD_CLIENT_ID } from '../protocol/constants.ts';
import { CordonSdkError } from './errors.ts';
import { isObject } from './http.ts';
import type { Form } from './token-answer.ts';
import type { ClientKeyAlg, CordonAgentOptions, SdkClock } from './types.ts';

/** How the agent authenticates at /token and /revoke. */
export interface ClientAuth {
  /** A client credential (secret or private key): the agent can renew its session and end it. */
  readonly authenticates: boolean;
  credentials(): Promise<{ headers: Record<string, string>; form: Form }>;
}

/** client_secret_basic. */
export function secretAuth(clientId: string, secret: string): ClientAuth {
  const enc = (s: string) => encodeURIComponent(s);
  const headers = { authorization: `Basic ${Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64')}` };
  return { authenticates: true, credentials: async () => ({ headers, form: [] }) };
}

/** private_key_jwt: a short signed assertion per request, on the agent's clock. */
export function privateKeyJwtAuth(
  clientId: string,
  issuer: string,
  clock: SdkClock,
  k: CryptoKey | JWK | string,
  alg?: ClientKeyAlg,
  kid?: string,
): ClientAuth {
  let loaded: ReturnType<typeof loadClientKey> | null = null;
  return {
    authenticates: true,
    async credentials() {
      loaded ??= loadClientKey(k, alg, kid);
      const { key, alg: a, kid: keyId } = await loaded;
      const iat = Math.floor(clock.now() / 1000);
      const assertion = await new SignJWT({})
        .setProtectedHeader(keyId ? { alg: a, kid: keyId } : { alg: a })
        .setIssuer(clientId)
        .setSubject(clientId)
        .setAudience(issuer)
        .setIssuedAt(iat)
        .setExpirationTime(iat + 60)
        .setJti(randomBytes(16).toString('base64url'))
        .sign(key);
      return {
        headers: {},
        form: [
          ['client_id', clientId],
          ['client_assertion_type', CLIENT_ASSERTION_TYPE],
          ['client_assertion', assertion],
        ],
      };
    },
  };
}

/** A public client: the agent's client_id, or the workload client that redeems bootstrap and federated tokens. */
export function publicClientAuth(clientId: string | undefined): ClientAuth {
  const form: Form = [['client_id', clientId ?? WORKLOAD_CLIENT_ID]];
  return { authenticates: false, credentials: async () => ({ headers: {}, form }) };
}

/** The client authentication the options give: a secret, a private key, or none (a public client). */
export function clientAuthFor(opts: CordonAgentOptions, issuer: string, clock: SdkClock): ClientAuth {
  if (opts.clientSecret !== undefined) return secretAuth(opts.clientId!, opts.clientSecret);
  if (opts.privateKey !== undefined) return privateKeyJwtAuth(opts.clientId!, issuer, clock, opts.privateKey, opts.privateKeyAlg, opts.privateKeyKid);
  return publicClientAuth(opts.clientId);
}

/** A private key for private_key_jwt from a JWK, a PKCS#8 PEM or a CryptoKey; symmetric keys are refused. */
async function loadClientKey(k: CryptoKey | JWK | string, alg?: ClientKeyAlg, kid?: string): Promise<{ key: CryptoKey; alg: ClientKeyAlg; kid?: string }> {
  let jwk: JWK;
  if (typeof k === 'string') {
    const text = k.trim();
    if (text.startsWith('{')) {
      try {
        jwk = JSON.parse(text) as JWK;
      } catch {
        throw new CordonSdkError('config', 'private key: the JWK is not valid JSON');
      }
    } else {
      try {
        jwk = createPrivateKey(text).export({ format: 'jwk' });
      } catch {
        throw new CordonSdkError('config', 'private key: neither a JWK nor a PKCS#8/SEC1 PEM private key');
      }
    }
  } else if (isObject(k) && typeof k.kty === 'string') {
    jwk = k;
  } else {
    if (!alg) throw new CordonSdkError('config', 'privateKeyAlg is required with a CryptoKey');
    return { key: k as CryptoKey, alg, kid };
  }
  if (jwk.kty === 'oct') throw new CordonSdkError('config', 'private key: symmetric keys cannot sign client assertions');
  if (!jwk.d) throw new CordonSdkError('config', 'private key: the JWK has no private part (d)');
  const a = (alg ?? jwk.alg ?? inferAlg(jwk)) as ClientKeyAlg | undefined;
  if (!a || !(CLIENT_ASSERTION_ALGS as readonly string[]).includes(a))
    throw new CordonSdkError(
      'config',
      `private key: cannot use algorithm ${JSON.stringify(a)} (${CLIENT_ASSERTION_ALGS.slice(0, -1).join(', ')} or ${CLIENT_ASSERTION_ALGS.at(-1)})`,
    );
  const key = (await importJWK(jwk, a)) as CryptoKey;
  return { key, alg: a, kid: kid ?? jwk.kid };
}

function inferAlg(jwk: JWK): ClientKeyAlg | undefined {
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  if (jwk.kty === 'RSA') return 'RS256';
  return undefined;
}
