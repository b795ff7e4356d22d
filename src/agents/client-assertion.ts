import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';

/** RFC 7523 leaves the cap to the server; minutes are plenty for a one-request credential. */
export const MAX_ASSERTION_LIFETIME_MS = 10 * 60_000;

const refuse = (why: string): CordonError => new CordonError('invalid_client', why, { reason: 'client_auth_failed' });

/**
 * A private_key_jwt client assertion's times, judged on the broker's clock: not expired, not
 * from the future (beyond the configured skew), and not living longer than ten minutes.
 * oidc-provider checks /token assertions on its own wall clock; this runs there too, so one
 * clock decides everywhere and a skewed or long-lived assertion is refused at every endpoint.
 */
export function checkAssertionTimes(b: Broker, payload: { exp?: unknown; nbf?: unknown; iat?: unknown }): void {
  const now = b.clock.now();
  const skewMs = b.config.clockSkewSec * 1000;
  const { exp, nbf, iat } = payload;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw refuse('client_assertion has no exp');
  if (exp * 1000 <= now - skewMs) throw refuse('client_assertion has expired');
  if (typeof nbf === 'number' && nbf * 1000 > now + skewMs) throw refuse('client_assertion is not valid yet');
  if (typeof iat === 'number' && iat * 1000 > now + skewMs) throw refuse('client_assertion was issued in the future');
  if (exp * 1000 - now > MAX_ASSERTION_LIFETIME_MS) throw refuse('client_assertion lives too long (max 10 minutes)');
}

/** The payload of a compact JWS whose signature someone else has verified; undefined if unreadable. */
export function assertionPayload(assertion: string): Record<string, unknown> | undefined {
  try {
    const p = JSON.parse(Buffer.from(assertion.split('.')[1] ?? '', 'base64url').toString('utf8'));
    return p !== null && typeof p === 'object' && !Array.isArray(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The replay key of a client assertion, the same at /token and at /introspect and /revoke, so one
 * assertion is good for one request anywhere. `oidcId` is oidc-provider's ReplayDetection id for
 * it, an internal of that library: assertionReplayId in src/http/internals.ts, with its contract test.
 */
export const assertionReplayKey = (oidcId: string): string => `assert:${oidcId}`;
