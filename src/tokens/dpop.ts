import { createHash } from 'node:crypto';
import { EmbeddedJWK, calculateJwkThumbprint, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { replayGuard } from '../store/replay.ts';

/** RFC 9449: asymmetric algorithms only. */
export const DPOP_ALGS = ['ES256', 'EdDSA', 'RS256', 'PS256'];
/** A proof is accepted this long after its iat (plus the configured skew), and remembered as long. */
const PROOF_WINDOW_SEC = 60;

export interface DpopCheck {
  method: string;
  /** The request URL without query and fragment (RFC 9449 §4.2 htu). */
  url: string;
  /** When the proof accompanies an access token, its ath must hash it. */
  accessToken?: string;
}

const bad = (why: string, reason = 'dpop_invalid'): CordonError => new CordonError('invalid_dpop_proof', why, { reason });

/** Verifies a DPoP proof and returns the thumbprint of its key (`cnf.jkt`). Replays are refused. */
export async function verifyDpopProof(b: Broker, proof: unknown, check: DpopCheck): Promise<string> {
  if (typeof proof !== 'string' || proof.length > 4096 || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(proof)) throw bad('DPoP proof is not a compact JWS');
  let header;
  try {
    header = decodeProtectedHeader(proof);
  } catch {
    throw bad('DPoP proof header is not valid JSON');
  }
  if (header.typ !== 'dpop+jwt') throw bad('DPoP proof typ must be dpop+jwt');
  if (!DPOP_ALGS.includes(header.alg as string)) throw bad(`DPoP proof algorithm ${JSON.stringify(header.alg)} is not allowed`);
  const jwk = header.jwk as Record<string, unknown> | undefined;
  if (!jwk || typeof jwk !== 'object' || 'd' in jwk || jwk.kty === 'oct') throw bad('DPoP proof must carry a public asymmetric jwk');
  let payload;
  try {
    ({ payload } = await jwtVerify(proof, EmbeddedJWK, { algorithms: DPOP_ALGS, typ: 'dpop+jwt', currentDate: new Date(b.clock.now()), clockTolerance: b.config.clockSkewSec, requiredClaims: ['iat', 'jti'] }));
  } catch (e) {
    if (e instanceof joseErrors.JWSSignatureVerificationFailed) throw bad('DPoP proof signature is invalid');
    throw bad('DPoP proof could not be verified');
  }
  if (payload.htm !== check.method) throw bad('DPoP proof htm does not match the request method');
  if (payload.htu !== check.url) throw bad('DPoP proof htu does not match the request URL');
  const now = Math.floor(b.clock.now() / 1000);
  const iat = payload.iat as number;
  if (iat > now + b.config.clockSkewSec) throw bad('DPoP proof is issued in the future', 'dpop_future');
  if (iat < now - PROOF_WINDOW_SEC - b.config.clockSkewSec) throw bad('DPoP proof is too old', 'dpop_stale');
  if (typeof payload.jti !== 'string' || payload.jti.length < 8 || payload.jti.length > 128) throw bad('DPoP proof jti is missing or malformed');
  if (check.accessToken !== undefined) {
    const ath = createHash('sha256').update(check.accessToken).digest('base64url');
    if (payload.ath !== ath) throw bad('DPoP proof ath does not match the access token');
  }
  const jkt = await calculateJwkThumbprint(jwk as never);
  const key = `dpop:${createHash('sha256').update(`${jkt}:${payload.jti}`).digest('base64url')}`;
  const fresh = await replayGuard.claim(b.db, key, (iat + PROOF_WINDOW_SEC + 2 * b.config.clockSkewSec) * 1000, b.clock.now());
  if (!fresh) throw bad('DPoP proof has been used before', 'dpop_replay');
  return jkt;
}

export interface DpopTokenUse {
  /** The verified claims of the access token being used. */
  claims: { cnf?: { jkt?: string } };
  /** The `DPoP` request header, if any. */
  proof: unknown;
  method: string;
  /** The request URL without query and fragment (RFC 9449 §4.2 htu). */
  url: string;
  /** The access token as presented, for the proof's `ath`. */
  accessToken: string;
}

/**
 * The resource-side check of a sender-constrained token (RFC 9449 §7): a token with `cnf.jkt`
 * is usable only with a fresh proof, made with that key, for this request and this token.
 * Missing proof or another key → `invalid_token` (§7.1: the token is not usable this way);
 * a bad, stale or replayed proof → `invalid_dpop_proof`. Returns the proof's thumbprint, or
 * null for a token that is not DPoP-bound (a proof sent with it is then not required, and not checked).
 */
export async function requireDpopForToken(b: Broker, use: DpopTokenUse): Promise<string | null> {
  const bound = use.claims.cnf?.jkt;
  if (bound === undefined) return null;
  if (use.proof === undefined || use.proof === null || use.proof === '') throw new CordonError('invalid_token', 'this token is DPoP-bound: present it with a DPoP proof made with its key', { reason: 'dpop_missing' });
  if (Array.isArray(use.proof)) throw bad('exactly one DPoP header is allowed');
  const jkt = await verifyDpopProof(b, use.proof, { method: use.method, url: use.url, accessToken: use.accessToken });
  if (jkt !== bound) throw new CordonError('invalid_token', 'the DPoP proof is not made with the key this token is bound to', { reason: 'dpop_key_mismatch' });
  return jkt;
}
