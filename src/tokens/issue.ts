import type { Broker } from '../broker.ts';
import type { Q } from '../store/db.ts';
import type { TokenRecord } from '../store/tokens.ts';
import type { Session } from '../store/sessions.ts';
import { newJti } from '../ids.ts';
import type { AccessTokenClaims, ActClaim } from './claims.ts';
import { signAccessToken } from './mint.ts';

/** A decided grant: every bound has been checked; only minting and recording remain. */
export interface Grant {
  sid: string;
  subject: string;
  clientId: string;
  parentJti: string | null;
  scope: string[];
  audience: string[];
  task: string | null;
  depth: number;
  act: ActClaim | null;
  cnfJkt: string | null;
  expiresAt: number; // ms
}

export interface IssuedToken {
  jwt: string;
  claims: AccessTokenClaims;
  expiresIn: number;
}

/**
 * Signs the token, then records it with its session (when it opens one) and its audit row in one
 * transaction (group-committed with concurrent issues), so a token exists only if its record and
 * its audit row do. `precheck` runs inside that transaction and may still refuse.
 */
export async function issueToken(
  b: Broker,
  g: Grant,
  audit: { event: 'session.open' | 'token.issue' | 'delegation.issue'; chain: string[]; params: Record<string, unknown> },
  opts: { opens?: Session; precheck?: (tx: Q) => Promise<void> } = {},
): Promise<IssuedToken> {
  const now = b.clock.now();
  const iat = Math.floor(now / 1000);
  const exp = Math.floor(g.expiresAt / 1000);
  const claims: AccessTokenClaims = {
    iss: b.config.issuer,
    sub: g.subject,
    aud: g.audience.length === 1 ? g.audience[0] : g.audience,
    iat,
    nbf: iat,
    exp,
    jti: newJti(),
    client_id: g.clientId,
    scope: g.scope.join(' '),
    sid: g.sid,
    ...(g.task ? { task: g.task } : {}),
    cordon_depth: g.depth,
    ...(g.act ? { act: g.act } : {}),
    ...(g.cnfJkt ? { cnf: { jkt: g.cnfJkt } } : {}),
  };
  // Signed before anything is written, so no transaction waits on the signature.
  await b.keys.fresh();
  const { jwt, kid } = await signAccessToken(b.keys, claims);
  const token: TokenRecord = {
    jti: claims.jti,
    sid: g.sid,
    clientId: g.clientId,
    parentJti: g.parentJti,
    scope: claims.scope,
    audience: g.audience,
    depth: g.depth,
    act: g.act as Record<string, unknown> | null,
    cnfJkt: g.cnfJkt,
    kid,
    issuedAt: iat * 1000,
    expiresAt: exp * 1000,
    revokedAt: null,
  };
  await b.issuance.write({
    session: opts.opens,
    token,
    precheck: opts.precheck,
    audit: {
      at: now,
      event: audit.event,
      decision: 'allow',
      agentId: g.clientId,
      sid: g.sid,
      jti: claims.jti,
      chain: audit.chain,
      params: { ...audit.params, scope: claims.scope, exp, depth: g.depth, ...(g.parentJti ? { parent_jti: g.parentJti } : {}) },
    },
  });
  for (const f of b.hooks.onDecision) f(audit.event, 'allow', null);
  return { jwt, claims, expiresIn: exp - iat };
}
