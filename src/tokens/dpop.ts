import { createHash } from 'node:crypto';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { DpopProofError, verifyDpopProof as verifyProof } from '../protocol/dpop.ts';
import { replayGuard } from '../store/replay.ts';

export { DPOP_ALGS } from '../protocol/constants.ts';

/** A proof is accepted this long after its iat (plus the configured skew), and remembered as long. */
const PROOF_WINDOW_SEC = 60;

export interface DpopCheck {
  method: string;
  /** The request URL (RFC 9449 §4.2 htu; compared after normalising both sides). */
  url: string;
  /** When the proof accompanies an access token, its ath must hash it. */
  accessToken?: string;
}

const bad = (why: string, reason = 'dpop_invalid'): CordonError => new CordonError('invalid_dpop_proof', why, { reason });
const REASONS: Partial<Record<DpopProofError['fault'], string>> = { future: 'dpop_future', stale: 'dpop_stale' };

/** Verifies a DPoP proof (src/protocol/dpop.ts) and returns the thumbprint of its key (`cnf.jkt`). Replays are refused. */
export async function verifyDpopProof(b: Broker, proof: unknown, check: DpopCheck): Promise<string> {
  const now = b.clock.now();
  let p;
  try {
    p = await verifyProof(proof, { ...check, nowMs: now, windowSec: PROOF_WINDOW_SEC, skewSec: b.config.clockSkewSec });
  } catch (e) {
    if (e instanceof DpopProofError) throw bad(e.message, REASONS[e.fault]);
    throw e;
  }
  const key = `dpop:${createHash('sha256').update(`${p.jkt}:${p.jti}`).digest('base64url')}`;
  const fresh = await replayGuard.claim(b.db, key, (p.iat + PROOF_WINDOW_SEC + 2 * b.config.clockSkewSec) * 1000, now);
  if (!fresh) throw bad('DPoP proof has been used before', 'dpop_replay');
  return p.jkt;
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
  if (use.proof === undefined || use.proof === null || use.proof === '')
    throw new CordonError('invalid_token', 'this token is DPoP-bound: present it with a DPoP proof made with its key', { reason: 'dpop_missing' });
  if (Array.isArray(use.proof)) throw bad('exactly one DPoP header is allowed');
  const jkt = await verifyDpopProof(b, use.proof, { method: use.method, url: use.url, accessToken: use.accessToken });
  if (jkt !== bound) throw new CordonError('invalid_token', 'the DPoP proof is not made with the key this token is bound to', { reason: 'dpop_key_mismatch' });
  return jkt;
}
