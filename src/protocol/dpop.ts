import { createHash } from 'node:crypto';
import { EmbeddedJWK, calculateJwkThumbprint, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { DPOP_ALGS, DPOP_TYP } from './constants.ts';

/**
 * What is wrong with a proof, for the caller to map onto its own errors: `malformed` (not a
 * JWS, bad header), `typ`, `alg`, `jwk` (not a public asymmetric key), `signature`, `htm`,
 * `htu`, `ath`, `jti`, `future`, `stale`.
 */
export type DpopProofFault = 'malformed' | 'typ' | 'alg' | 'jwk' | 'signature' | 'htm' | 'htu' | 'ath' | 'jti' | 'future' | 'stale';

export class DpopProofError extends Error {
  readonly fault: DpopProofFault;
  constructor(fault: DpopProofFault, message: string) {
    super(message);
    this.name = 'DpopProofError';
    this.fault = fault;
  }
}

export interface DpopProofCheck {
  /** The request method (`htm`). */
  method: string;
  /** The request URL; compared with `htu` after normalising both (RFC 9449 §4.3). */
  url: string;
  /** When the proof accompanies an access token, its `ath` must hash it. */
  accessToken?: string;
  /** Now, in ms since the epoch (the caller's injected clock). */
  nowMs: number;
  /** A proof is accepted this long after its `iat`. */
  windowSec: number;
  /** Clock skew allowed either way. */
  skewSec: number;
}

export interface VerifiedDpopProof {
  /** JWK SHA-256 thumbprint of the proof's key (`cnf.jkt`). */
  jkt: string;
  jti: string;
  /** Seconds since the epoch. */
  iat: number;
}

const JWS = /^[\w-]+\.[\w-]+\.[\w-]+$/;
const MAX_PROOF = 4096;
/** JWK members that only a private or symmetric key has. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

/**
 * RFC 9449 §4.3 point 9: `htu` and the request URL compared after syntax- and scheme-based
 * normalisation: scheme and host lower-case, default port dropped, no query or fragment.
 * Null when it is not an absolute http(s) URL.
 */
export function normalizeHtu(u: string): string | null {
  let x: URL;
  try {
    x = new URL(u);
  } catch {
    return null;
  }
  if (x.protocol !== 'https:' && x.protocol !== 'http:') return null;
  // WHATWG URL parsing already lower-cases scheme and host and drops the scheme's default port.
  return `${x.protocol}//${x.host}${x.pathname}`;
}

/** base64url(SHA-256(token)): the `ath` of a proof that accompanies an access token. */
export const athOf = (accessToken: string): string => createHash('sha256').update(accessToken).digest('base64url');

/**
 * Verifies a DPoP proof (RFC 9449 §4.3) without side effects: structure, typ, algorithm, an
 * embedded public asymmetric key, signature, htm, htu, iat window, jti shape and ath. Replay
 * detection is the caller's (the broker remembers proofs in its database, a resource server in
 * memory): it gets `jkt` and `jti` to remember.
 */
export async function verifyDpopProof(proof: unknown, check: DpopProofCheck): Promise<VerifiedDpopProof> {
  const bad = (fault: DpopProofFault, why: string) => new DpopProofError(fault, why);
  if (typeof proof !== 'string' || proof.length > MAX_PROOF || !JWS.test(proof)) throw bad('malformed', 'DPoP proof is not a compact JWS');
  let header;
  try {
    header = decodeProtectedHeader(proof);
  } catch {
    throw bad('malformed', 'DPoP proof header is not valid JSON');
  }
  if (header.typ !== DPOP_TYP) throw bad('typ', `DPoP proof typ must be ${DPOP_TYP}`);
  if (!DPOP_ALGS.includes(header.alg as string)) throw bad('alg', `DPoP proof algorithm ${JSON.stringify(header.alg)} is not allowed`);
  const jwk = header.jwk as Record<string, unknown> | undefined;
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk) || jwk.kty === 'oct' || PRIVATE_MEMBERS.some((m) => m in jwk)) {
    throw bad('jwk', 'DPoP proof must carry a public asymmetric jwk');
  }
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(proof, EmbeddedJWK, {
      algorithms: DPOP_ALGS,
      typ: DPOP_TYP,
      currentDate: new Date(check.nowMs),
      clockTolerance: check.skewSec,
      requiredClaims: ['iat', 'jti'],
    }));
  } catch (e) {
    if (e instanceof joseErrors.JWSSignatureVerificationFailed) throw bad('signature', 'DPoP proof signature is invalid');
    throw bad('malformed', 'DPoP proof could not be verified');
  }
  if (payload.htm !== check.method) throw bad('htm', 'DPoP proof htm does not match the request method');
  const htu = typeof payload.htu === 'string' ? normalizeHtu(payload.htu) : null;
  if (htu === null || htu !== normalizeHtu(check.url)) throw bad('htu', 'DPoP proof htu does not match the request URL');
  const nowSec = Math.floor(check.nowMs / 1000);
  const iat = payload.iat as number;
  if (iat > nowSec + check.skewSec) throw bad('future', 'DPoP proof is issued in the future');
  if (iat < nowSec - check.windowSec - check.skewSec) throw bad('stale', 'DPoP proof is too old');
  const jti = payload.jti;
  if (typeof jti !== 'string' || jti.length < 8 || jti.length > 128) throw bad('jti', 'DPoP proof jti is missing or malformed');
  if (check.accessToken !== undefined && payload.ath !== athOf(check.accessToken)) throw bad('ath', 'DPoP proof ath does not match the access token');
  return { jkt: await calculateJwkThumbprint(jwk), jti, iat };
}
