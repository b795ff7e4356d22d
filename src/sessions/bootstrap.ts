import { createHash, randomBytes } from 'node:crypto';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { bootstrapTokens, type BootstrapRecord } from '../store/bootstrap.ts';
import { transact } from '../store/db.ts';
import { newId } from '../ids.ts';
import { parseScope, uncovered } from '../policy/scopes.ts';
import { findAgent } from '../agents/registry.ts';
import type { Attempt } from '../audit/attempt.ts';
import { activeAgentAndPolicy, parseRequestedScope, startSession, type SessionStartResult } from './start.ts';

/** The public workload client (src/protocol/constants.ts), served by the provider adapter (src/http/provider.ts). */
export { WORKLOAD_CLIENT_ID } from '../protocol/constants.ts';

export const BOOTSTRAP_PREFIX = 'cbt_';
/** `cbt_` + 256 random bits, base64url. */
const BOOTSTRAP_PATTERN = /^cbt_[A-Za-z0-9_-]{43}$/;
export const BOOTSTRAP_MIN_TTL_SEC = 1;
export const BOOTSTRAP_MAX_TTL_SEC = 24 * 3600;

const hashOf = (token: string): string => createHash('sha256').update(token).digest('hex');

export interface IssuedBootstrapToken {
  /** The secret; shown once, never stored. */
  token: string;
  id: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

/**
 * `cordon agent bootstrap AGENT --ttl 5m`: a one-time token that opens exactly one session for
 * AGENT through token exchange. Only its SHA-256 is stored; the row and its audit row commit together.
 * `scope` (optional) narrows what that session may ask for, within the agent's policy.
 */
export async function issueBootstrapToken(
  b: Broker,
  agentIdOrName: string,
  opts: { ttlSec: number; actor?: string; scope?: string },
): Promise<IssuedBootstrapToken> {
  if (!Number.isInteger(opts.ttlSec) || opts.ttlSec < BOOTSTRAP_MIN_TTL_SEC || opts.ttlSec > BOOTSTRAP_MAX_TTL_SEC) {
    throw new CordonError('invalid_request', `bootstrap ttl must be a whole number of seconds from ${BOOTSTRAP_MIN_TTL_SEC}s to 24h`, {
      reason: 'ttl_out_of_range',
    });
  }
  const agent = await findAgent(b, agentIdOrName);
  if (agent.status !== 'active') throw new CordonError('invalid_request', `agent ${agent.name} is ${agent.status}`, { reason: `agent_${agent.status}` });
  const policy = b.policies.get(agent.policy);
  if (!policy) throw new CordonError('invalid_request', `agent ${agent.name}'s policy "${agent.policy}" is not loaded`, { reason: 'policy_missing' });
  let scope: string | null = null;
  if (opts.scope !== undefined) {
    const s = parseRequestedScope(opts.scope);
    const out = uncovered(policy.scopes, s);
    if (out.length) throw new CordonError('invalid_scope', `scope not allowed by policy ${policy.name}: ${out.join(' ')}`, { reason: 'scope_not_allowed' });
    scope = s.join(' ');
  }
  const token = `${BOOTSTRAP_PREFIX}${randomBytes(32).toString('base64url')}`;
  const now = b.clock.now();
  const rec: BootstrapRecord = {
    id: newId('bst'),
    agentId: agent.id,
    tokenHash: hashOf(token),
    scope,
    createdAt: now,
    expiresAt: now + opts.ttlSec * 1000,
    usedAt: null,
    usedSid: null,
  };
  await transact(b.db, async (tx) => {
    await bootstrapTokens.insert(tx, rec);
    await appendAudit(tx, {
      at: now,
      event: 'bootstrap.issue',
      decision: 'allow',
      agentId: agent.id,
      chain: [agent.id],
      params: { bootstrap_id: rec.id, ttl: opts.ttlSec, expires_at: rec.expiresAt, ...(scope ? { scope } : {}), by: opts.actor ?? 'cli' },
    });
  });
  return { token, id: rec.id, expiresAt: rec.expiresAt };
}

export interface BootstrapRedeemRequest {
  /** The authenticated agent, or null when the caller is the public workload client. */
  callerClientId: string | null;
  scope?: string;
  task?: string;
  audience: string[];
  requestedTtl?: string;
  dpopJkt?: string | null;
}

/**
 * Token exchange with `subject_token_type=urn:cordon:token-type:bootstrap`: opens one session
 * for the token's agent (origin `bootstrap`) and kills the token.
 *
 * The single-use gate is a conditional UPDATE (`used_at IS NULL AND expires_at > now`) inside
 * the transaction that writes the session, its token and its audit row: of concurrent
 * redemptions exactly one commits, every other one is refused as a replay, and a session start
 * that is refused (a mistyped scope, say) never touches the token. A token that opened a
 * session is dead, and the session's audit row names it (`bootstrap_id`).
 */
export async function redeemBootstrapToken(b: Broker, token: string, req: BootstrapRedeemRequest, attempt: Attempt): Promise<SessionStartResult> {
  attempt
    .by(req.callerClientId, req.callerClientId ? [req.callerClientId] : null)
    .note({ scope: req.scope, task: req.task, audience: req.audience, origin: 'bootstrap' });
  if (!BOOTSTRAP_PATTERN.test(token)) throw new CordonError('invalid_grant', 'subject_token is not a bootstrap token', { reason: 'bootstrap_malformed' });
  const rec = await bootstrapTokens.byHash(b.db, hashOf(token));
  if (!rec) throw new CordonError('invalid_grant', 'bootstrap token is not known to this broker', { reason: 'bootstrap_unknown' });
  attempt.by(rec.agentId, [rec.agentId]).in(rec.usedSid).note({ bootstrap_id: rec.id });
  if (req.callerClientId !== null && req.callerClientId !== rec.agentId) {
    throw new CordonError('invalid_grant', 'bootstrap token was issued to another agent', { reason: 'bootstrap_not_holder' });
  }
  const now = b.clock.now();
  if (rec.usedAt !== null) throw replay(rec.usedSid);
  if (rec.expiresAt <= now) throw new CordonError('invalid_grant', 'bootstrap token has expired', { reason: 'bootstrap_expired' });
  await activeAgentAndPolicy(b, rec.agentId).catch((e: CordonError) => {
    throw new CordonError('invalid_grant', `the agent of this bootstrap token cannot start a session: ${e.description}`, { reason: e.reason });
  });
  if (rec.scope !== null) {
    const out = uncovered(parseScope(rec.scope), parseRequestedScope(req.scope));
    if (out.length)
      throw new CordonError('invalid_scope', `scope outside what this bootstrap token allows: ${out.join(' ')}`, { reason: 'scope_outside_bootstrap' });
  }
  const id = rec.id;
  return await startSession(
    b,
    {
      clientId: rec.agentId,
      scope: req.scope,
      task: req.task,
      audience: req.audience,
      requestedTtl: req.requestedTtl,
      dpopJkt: req.dpopJkt,
      origin: 'bootstrap',
      auditParams: { origin: 'bootstrap', bootstrap_id: id },
      claim: async (tx, sid) => {
        if (await bootstrapTokens.redeem(tx, id, now, sid)) return;
        // Lost the race to a concurrent use, or expired in between.
        const again = await bootstrapTokens.get(tx, id);
        if (again && again.usedAt === null) throw new CordonError('invalid_grant', 'bootstrap token has expired', { reason: 'bootstrap_expired' });
        throw replay(again?.usedSid ?? null);
      },
    },
    attempt,
  );
}

const replay = (usedSid: string | null): CordonError =>
  new CordonError('invalid_grant', `bootstrap token replay: it was already used${usedSid ? ' to open a session' : ''} and is dead`, {
    reason: 'bootstrap_replay',
    auditParams: { replay: true, ...(usedSid ? { session_opened: usedSid } : {}) },
  });
