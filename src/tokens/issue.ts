import type { Broker } from '../broker.ts';
import { appendAudit } from '../audit/log.ts';
import type { Attempt } from '../audit/attempt.ts';
import type { CordonError } from '../errors.ts';
import { RefusalLimiter, type RefusalSummary } from '../audit/refusal-limiter.ts';
import { agents } from '../store/agents.ts';
import { isWellFormedId } from '../ids.ts';
import { type Q, transact } from '../store/db.ts';
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
  await b.issuance.write({ session: opts.opens, token, precheck: opts.precheck, audit: {
    at: now,
    event: audit.event,
    decision: 'allow',
    agentId: g.clientId,
    sid: g.sid,
    jti: claims.jti,
    chain: audit.chain,
    params: { ...audit.params, scope: claims.scope, exp, depth: g.depth, ...(g.parentJti ? { parent_jti: g.parentJti } : {}) },
  } });
  for (const f of b.hooks.onDecision) f(audit.event, 'allow', null);
  return { jwt, claims, expiresIn: exp - iat };
}

/**
 * The one writer of refusals, called by each entry point (HTTP route, grant, CLI command) exactly
 * once for a refused attempt: who (as far as the decisions learned), what was asked, why — the RFC
 * error code and the description, with the stable reason tag in `params.reason_tag` (metrics and
 * summaries count by that tag). A refusal made to
 * a network caller carries its client address; when it names no known agent (nobody authenticated,
 * no claimed client id that is in the agents table) it is junk anyone can send, and goes through
 * the broker's refusal limiter: written as usual up to the per-address budget, counted into one
 * summary row per address and window beyond it. Refusals of known agents are always written.
 * Errors that are not the caller's (5xx other than a backend refusal) are not refusals.
 */
export async function recordRefusal(b: Broker, attempt: Attempt, e: CordonError): Promise<void> {
  const reason = `${e.code}: ${e.description}`;
  for (const f of b.hooks.onDecision) f(attempt.event, 'deny', e.reason);
  if (attempt.clientAddress !== undefined && !(await isKnownAgent(b, attempt.agentId)) && !refusalLimiterOf(b).admit(attempt.clientAddress, e.reason)) return;
  const params = { ...attempt.params, ...e.auditParams, attempted: attempt.event, reason_tag: e.reason, ...(attempt.clientAddress !== undefined ? { client_address: attempt.clientAddress } : {}) };
  await transact(b.db, (tx) =>
    appendAudit(tx, { at: b.clock.now(), event: 'deny', decision: 'deny', agentId: attempt.agentId, sid: attempt.sid, jti: attempt.jti, chain: attempt.chain, reason, params }),
  );
}

/** A cheap primary-key read; when the database cannot answer, the refusal is written as a known agent's would be. */
async function isKnownAgent(b: Broker, id: string | null | undefined): Promise<boolean> {
  if (!isWellFormedId(id)) return false;
  try {
    return (await agents.get(b.read, id)) !== undefined;
  } catch {
    return true;
  }
}

const limiters = new WeakMap<Broker, RefusalLimiter>();

/** The broker's refusal limiter (one per broker: several brokers share a test process). */
export function refusalLimiterOf(b: Broker): RefusalLimiter {
  let l = limiters.get(b);
  if (!l) {
    l = new RefusalLimiter({
      clock: b.clock,
      write: async (s) => {
        await transact(b.db, (tx) => appendAudit(tx, summaryEntry(b, s)));
      },
      onError: (e) => b.log.error({ err: (e as Error).message }, 'could not write a refusal summary'),
    });
    limiters.set(b, l);
  }
  return l;
}

/** At stop, before the database closes: the summaries of refusals counted so far are written. */
export async function closeRefusalLimiter(b: Broker): Promise<void> {
  await limiters.get(b)?.close();
}

const summaryEntry = (b: Broker, s: RefusalSummary) => ({
  at: b.clock.now(),
  event: 'deny.summary' as const,
  decision: 'deny' as const,
  reason: `${s.count} more refusals naming no known agent from ${s.address} in this window, counted instead of written one by one`,
  params: {
    client_address: s.address,
    count: s.count,
    window_start: new Date(s.windowStart).toISOString(),
    window_end: new Date(s.windowEnd).toISOString(),
    reasons: s.topReasons,
  },
});
