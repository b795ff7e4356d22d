import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import type { Agent } from '../store/agents.ts';
import { sessions, type Session, type SessionOrigin } from '../store/sessions.ts';
import type { Q } from '../store/db.ts';
import { sessionStateAtCommit } from '../store/liveness.ts';
import { newId, isWellFormedId } from '../ids.ts';
import { parseScope, uncovered } from '../policy/scopes.ts';
import type { Policy } from '../policy/types.ts';
import { isMcpResourceOf, mcpUpstreamOf } from '../policy/mcp-resource.ts';
import { issueToken, type IssuedToken } from '../tokens/issue.ts';
import type { Attempt } from '../audit/attempt.ts';

export interface SessionStartRequest {
  clientId: string;
  /** The agent's row when the caller already read it in this request (client authentication). */
  caller?: Agent;
  scope?: string;
  task?: string;
  /** `resource` and `audience` values together (RFC 8707 / RFC 8693). */
  audience: string[];
  /** Seconds; the token lives min(this, policy token_ttl, session remaining). */
  requestedTtl?: string;
  /** Ask for another token in a live session instead of opening one. */
  session?: string;
  /** DPoP key thumbprint when the request carried a valid proof. */
  dpopJkt?: string | null;
  origin?: SessionOrigin;
  /** The principal the chain acts for; the agent itself unless federation says otherwise. */
  subject?: string;
  /** Extra audit params (e.g. the bootstrap id or external issuer). */
  auditParams?: Record<string, unknown>;
  /**
   * A condition that commits with the session it opens (a bootstrap token's single-use claim):
   * runs inside the issuing transaction and throws a CordonError to refuse.
   */
  claim?: (tx: Q, sid: string) => Promise<void>;
}

export interface SessionStartResult extends IssuedToken {
  sid: string;
  sessionExpiresAt: number;
}

export const MAX_TASK_LENGTH = 200;

/** The agent may act at all: it exists, is active and is bound to a loaded policy. */
export async function activeAgentAndPolicy(b: Broker, clientId: string, preloaded?: Agent): Promise<{ agent: Agent; policy: Policy }> {
  const agent = preloaded?.id === clientId ? preloaded : await b.live.agents.get(b.read, clientId);
  if (!agent) throw new CordonError('invalid_client', 'unknown agent', { reason: 'agent_unknown' });
  if (agent.status !== 'active') throw new CordonError('invalid_client', `agent is ${agent.status}`, { reason: `agent_${agent.status}` });
  const policy = b.policies.get(agent.policy);
  if (!policy) throw new CordonError('invalid_client', `agent's policy "${agent.policy}" is not loaded`, { reason: 'policy_missing' });
  return { agent, policy };
}

export function parseRequestedScope(raw: string | undefined): string[] {
  if (raw === undefined || raw.trim() === '')
    throw new CordonError('invalid_scope', 'scope is required: a session is opened for named scopes only', { reason: 'scope_missing' });
  try {
    return parseScope(raw);
  } catch (e) {
    throw new CordonError('invalid_scope', `scope is malformed: ${(e as Error).message}`, { reason: 'scope_malformed' });
  }
}

/**
 * Requested audiences must each be allowed by the policy, be the broker itself (always
 * allowed: a token the agent keeps for /credentials), or be the gateway URL of an MCP upstream
 * the policy defines (RFC 8707 `resource={gateway}/mcp/{upstream}`); none requested means the broker.
 */
export function decideAudience(b: Broker, policy: Policy, requested: string[]): string[] {
  for (const a of requested) {
    if (policy.audiences.includes(a) || a === b.config.issuer || isMcpResourceOf(policy, b.config.gatewayUrl, a)) continue;
    if (mcpUpstreamOf(b.config.gatewayUrl, a) !== undefined)
      throw new CordonError('invalid_target', `resource ${JSON.stringify(a.slice(0, 200))} is no MCP upstream of policy ${policy.name}`, {
        reason: 'mcp_resource_unknown',
      });
    throw new CordonError('invalid_target', `audience ${JSON.stringify(a.slice(0, 200))} is not allowed by policy ${policy.name}`, {
      reason: 'audience_not_allowed',
    });
  }
  return requested.length ? [...new Set(requested)] : [b.config.issuer];
}

export function parseRequestedTtl(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^[1-9]\d{0,6}$/.test(raw))
    throw new CordonError('invalid_request', 'expires_in must be a positive whole number of seconds', { reason: 'ttl_malformed' });
  return Number(raw);
}

export function checkTask(task: string | undefined): string | null {
  if (task === undefined || task === '') return null;
  if (task.length > MAX_TASK_LENGTH)
    throw new CordonError('invalid_request', `task must be at most ${MAX_TASK_LENGTH} characters`, { reason: 'task_too_long' });
  // Printable text only: a task id shows up in tables, logs and tags.
  if (/[\u0000-\u001f\u007f]/.test(task)) throw new CordonError('invalid_request', 'task must not contain control characters', { reason: 'task_malformed' });
  return task;
}

/**
 * Session start (client_credentials, or a bootstrap/federated exchange that authenticated the agent):
 * opens a session, or renews inside a live one, and issues a root token (depth 0).
 */
export async function startSession(b: Broker, req: SessionStartRequest, attempt: Attempt): Promise<SessionStartResult> {
  // What a refusal's row will say: the agent asking and what it asked (written by the entry point).
  attempt.by(req.clientId, [req.clientId]).note({ scope: req.scope, task: req.task, audience: req.audience, ...req.auditParams });
  if (req.session !== undefined && isWellFormedId(req.session)) attempt.in(req.session);
  const { agent, policy } = await activeAgentAndPolicy(b, req.clientId, req.caller);
  const scope = parseRequestedScope(req.scope);
  const notHeld = uncovered(policy.scopes, scope);
  if (notHeld.length)
    throw new CordonError('invalid_scope', `scope not allowed by policy ${policy.name}: ${notHeld.join(' ')}`, { reason: 'scope_not_allowed' });
  let audience = decideAudience(b, policy, req.audience);
  const ttl = parseRequestedTtl(req.requestedTtl);
  let task = checkTask(req.task);
  if (policy.requireDpop && !req.dpopJkt) throw new CordonError('invalid_request', `policy ${policy.name} requires a DPoP proof`, { reason: 'dpop_required' });

  const now = b.clock.now();
  let sid: string;
  let sessionExpiresAt: number;
  let opening = false;
  let subject = req.subject ?? agent.id;
  if (req.session !== undefined) {
    if (!isWellFormedId(req.session)) throw new CordonError('invalid_request', 'session is malformed', { reason: 'session_malformed' });
    const s = await sessions.get(b.db, req.session);
    if (!s || s.agentId !== agent.id) throw new CordonError('invalid_grant', 'session not found for this agent', { reason: 'session_unknown' });
    if (s.revokedAt !== null) throw new CordonError('invalid_grant', 'session has been revoked', { reason: 'session_revoked' });
    if (s.expiresAt <= now) throw new CordonError('invalid_grant', 'session has ended; start a new one', { reason: 'session_expired' });
    const outside = uncovered(parseScope(s.scope), scope);
    if (outside.length)
      throw new CordonError('invalid_scope', `scope outside the session's task scope: ${outside.join(' ')}`, { reason: 'scope_outside_session' });
    if (task !== null && task !== s.task) throw new CordonError('invalid_request', "task differs from the session's task", { reason: 'task_mismatch' });
    // A renewal stays within the audiences the session was opened for (and the broker's own).
    if (req.audience.length) {
      const foreign = audience.filter((a) => !s.audience.includes(a) && a !== b.config.issuer);
      if (foreign.length)
        throw new CordonError('invalid_target', `audience ${foreign[0].slice(0, 200)} is outside the session's audience`, {
          reason: 'audience_outside_session',
        });
    } else {
      audience = s.audience;
    }
    task = s.task;
    subject = s.subject; // a renewal keeps the principal the session acts for (federation: the external subject)
    sid = s.sid;
    sessionExpiresAt = s.expiresAt;
  } else {
    sid = newId('ses');
    sessionExpiresAt = now + policy.sessionTtl * 1000;
    opening = true;
  }
  const expiresAt = Math.min(now + Math.min(ttl ?? Infinity, policy.tokenTtl) * 1000, sessionExpiresAt);
  const opens: Session | undefined = opening
    ? {
        sid,
        agentId: agent.id,
        task,
        scope: scope.join(' '),
        audience,
        origin: req.origin ?? 'client_credentials',
        subject,
        createdAt: now,
        expiresAt: sessionExpiresAt,
        revokedAt: null,
        revokeReason: null,
        sweptAt: null,
      }
    : undefined;
  const issued = await issueToken(
    b,
    { sid, subject, clientId: agent.id, parentJti: null, scope, audience, task, depth: 0, act: null, cnfJkt: req.dpopJkt ?? null, expiresAt },
    {
      event: opening ? 'session.open' : 'token.issue',
      chain: [agent.id],
      params: { task, audience, origin: req.origin ?? 'client_credentials', session_expires_at: sessionExpiresAt, ...req.auditParams },
    },
    // A renewal commits only while its session is still unrevoked; a claim commits with the token or not at all.
    {
      opens,
      precheck:
        opening && !req.claim
          ? undefined
          : async (tx) => {
              if (!opening) await assertSessionLive(tx, sid, b.clock.now());
              await req.claim?.(tx, sid);
            },
    },
  );
  return { ...issued, sid, sessionExpiresAt };
}

/** Inside the issuing transaction: a renewal must not slip in after its session was revoked (or its agent disabled). */
async function assertSessionLive(tx: Q, sid: string, now: number): Promise<void> {
  const st = await sessionStateAtCommit(tx, sid, now);
  if (st.active) return;
  if (st.why === 'agent_inactive')
    throw new CordonError('invalid_grant', 'the agent of this session has been disabled or revoked', { reason: 'agent_inactive' });
  if (st.why === 'session_expired') throw new CordonError('invalid_grant', 'session has ended; start a new one', { reason: 'session_expired' });
  throw new CordonError('invalid_grant', 'session has been revoked', { reason: 'session_revoked' });
}
