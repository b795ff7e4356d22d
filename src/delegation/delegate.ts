import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { isWellFormedId } from '../ids.ts';
import { intersect, parseScope, uncovered } from '../policy/scopes.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { agents, type Agent } from '../store/agents.ts';
import type { Q } from '../store/db.ts';
import { statesAtCommit } from '../store/liveness.ts';
import type { Policy } from '../policy/types.ts';
import { isMcpResourceOf } from '../policy/mcp-resource.ts';
import { audiencesOf, chainOf, type ActClaim } from '../tokens/claims.ts';
import { issueToken, type IssuedToken } from '../tokens/issue.ts';
import type { Attempt } from '../audit/attempt.ts';
import { activeAgentAndPolicy, parseRequestedScope, parseRequestedTtl } from '../sessions/start.ts';

export interface DelegationRequest {
  callerClientId: string;
  /** The caller's row when client authentication already read it in this request. */
  caller?: Agent;
  subjectToken: string;
  requestedActor?: string;
  scope?: string;
  audience: string[];
  /** `intersect` trims the request to what the bounds allow instead of refusing it. */
  scopePolicy?: string;
  requestedTtl?: string;
  /** The sub-agent's key thumbprint the orchestrator binds the new token to (cnf.jkt). */
  bindJkt?: string;
  /** The caller's own DPoP proof thumbprint, needed when its token is DPoP-bound. */
  dpopJkt?: string | null;
}

const JKT_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/**
 * RFC 8693 delegation: a holder hands a sub-agent a token that is never wider, never longer
 * and never deeper than its own token and the policies allow. Every refusal names the bound.
 */
export async function delegate(b: Broker, req: DelegationRequest, attempt: Attempt): Promise<IssuedToken> {
  attempt.by(req.callerClientId, [req.callerClientId]).note({
    requested_actor: req.requestedActor?.slice(0, 64),
    scope: req.scope,
    audience: req.audience,
    scope_policy: req.scopePolicy,
    expires_in: req.requestedTtl,
  });
  // Every bound below reads the parent as the broker recorded it, never as presented.
  const { claims, view } = await b.live.require(req.subjectToken, 'invalid_grant');
  const chain = chainOf(claims);
  attempt.by(req.callerClientId, chain).in(claims.sid, claims.jti);
  if (claims.client_id !== req.callerClientId)
    throw new CordonError('invalid_grant', 'subject_token is held by another agent: only its holder may exchange it', { reason: 'not_holder' });
  if (claims.cnf?.jkt && req.dpopJkt !== claims.cnf.jkt)
    throw new CordonError('invalid_grant', 'subject_token is DPoP-bound: send a DPoP proof made with its key', { reason: 'dpop_binding' });

  if (!req.requestedActor) throw new CordonError('invalid_request', 'requested_actor (the sub-agent client_id) is required', { reason: 'actor_missing' });
  if (!isWellFormedId(req.requestedActor) && !NAME_PATTERN.test(req.requestedActor))
    throw new CordonError('invalid_request', 'requested_actor is malformed', { reason: 'actor_malformed' });
  const actorRow = (await b.live.agents.get(b.read, req.requestedActor)) ?? (await agents.byName(b.read, req.requestedActor));
  if (!actorRow) throw new CordonError('invalid_request', `requested_actor ${req.requestedActor} does not exist`, { reason: 'actor_unknown' });
  if (actorRow.status !== 'active')
    throw new CordonError('invalid_request', `requested_actor ${actorRow.name} is ${actorRow.status}`, { reason: 'actor_inactive' });
  if (chain.includes(actorRow.id))
    throw new CordonError('invalid_grant', `delegation loop: ${actorRow.name} is already in the chain`, { reason: 'delegation_loop' });

  const { policy: callerPolicy } = await activeAgentAndPolicy(b, req.callerClientId, req.caller);
  const actor = actorRow;
  const actorPolicy = b.policies.get(actor.policy);
  if (!actorPolicy)
    throw new CordonError('invalid_request', `requested_actor ${actor.name}'s policy "${actor.policy}" is not loaded`, { reason: 'actor_policy_missing' });
  // The session comes with the token's record (one join); the root is often the caller itself.
  const session = { agentId: view.sessionAgentId, expiresAt: view.sessionExpiresAt };
  const { policy: rootPolicy } =
    session.agentId === req.callerClientId
      ? { policy: callerPolicy }
      : await activeAgentAndPolicy(b, session.agentId).catch(() => {
          throw new CordonError('invalid_grant', 'the root agent of this session is no longer active', { reason: 'root_inactive' });
        });

  // Depth: every holder in the chain caps how far below itself the chain may reach (its policy's
  // max_depth, counted from its own depth): the root policy caps the whole chain, the caller what it
  // hands down, and an intermediate holder everything delegated under it.
  const depth = claims.cordon_depth + 1;
  if (depth > rootPolicy.delegation.maxDepth)
    throw new CordonError('invalid_grant', `delegation depth ${depth} exceeds max_depth ${rootPolicy.delegation.maxDepth} of root policy ${rootPolicy.name}`, {
      reason: 'depth_exceeded',
    });
  if (callerPolicy.delegation.maxDepth < 1)
    throw new CordonError('invalid_grant', `policy ${callerPolicy.name} does not allow delegation (max_depth 0)`, { reason: 'depth_exceeded' });
  const between = await intermediatePolicies(b, chain, claims.cordon_depth);
  for (const [at, policy] of between) {
    if (depth > at + policy.delegation.maxDepth)
      throw new CordonError(
        'invalid_grant',
        `delegation depth ${depth} exceeds what policy ${policy.name} (at depth ${at} of the chain) allows below it (max_depth ${policy.delegation.maxDepth})`,
        { reason: 'depth_exceeded' },
      );
  }

  // Scope: within the parent token, the sub-agent's policy and what the caller's policy may hand down.
  const requested = parseRequestedScope(req.scope);
  const parentScope = parseScope(claims.scope);
  const bounds: Array<[string[], string]> = [
    [parentScope, 'the parent token scope'],
    [actorPolicy.scopes, `policy ${actorPolicy.name} of ${actor.name}`],
    [callerPolicy.delegation.scopes, `delegation.scopes of policy ${callerPolicy.name}`],
  ];
  let scope: string[];
  if (req.scopePolicy !== undefined && req.scopePolicy !== 'intersect')
    throw new CordonError('invalid_request', 'scope_policy must be "intersect" when given', { reason: 'scope_policy_malformed' });
  if (req.scopePolicy === 'intersect') {
    scope = bounds.reduce((acc, [held]) => intersect(acc, held), requested);
    if (!scope.length)
      throw new CordonError(
        'invalid_scope',
        'the intersection of the requested scope with the parent token, the sub-agent policy and the delegable scopes is empty',
        { reason: 'scope_empty' },
      );
  } else {
    for (const [held, name] of bounds) {
      const out = uncovered(held, requested);
      if (out.length) throw new CordonError('invalid_scope', `scope ${out.join(' ')} is not within ${name}`, { reason: 'scope_widening' });
    }
    scope = requested;
  }

  // Audience: within the parent's audience and the sub-agent's allowed audiences. An MCP upstream's
  // URL is the root policy's to grant, as the upstream is (a sub-agent's policy defines no upstreams).
  const parentAud = audiencesOf(claims);
  const allowedForActor = (a: string): boolean =>
    actorPolicy.audiences.includes(a) || a === b.config.issuer || isMcpResourceOf(rootPolicy, b.config.gatewayUrl, a);
  let audience: string[];
  if (req.audience.length) {
    for (const a of req.audience) {
      if (!parentAud.includes(a))
        throw new CordonError('invalid_target', `audience ${a.slice(0, 200)} is not within the parent token's audience`, { reason: 'audience_widening' });
      if (!allowedForActor(a))
        throw new CordonError('invalid_target', `audience ${a.slice(0, 200)} is not allowed by policy ${actorPolicy.name}`, { reason: 'audience_not_allowed' });
    }
    audience = [...new Set(req.audience)];
  } else {
    // Never wider than the parent: with nothing in common the request is refused rather than given
    // the broker's own audience, which the parent may not hold (it would open /credentials).
    audience = parentAud.filter(allowedForActor);
    if (!audience.length)
      throw new CordonError('invalid_target', `none of the parent token's audiences is allowed by policy ${actorPolicy.name}`, {
        reason: 'audience_not_allowed',
      });
  }

  // Lifetime: never past the parent, the session, or the sub-agent's token_ttl.
  const now = b.clock.now();
  const parentExp = claims.exp * 1000;
  const cap = Math.min(parentExp, session.expiresAt, now + actorPolicy.tokenTtl * 1000);
  const ttl = parseRequestedTtl(req.requestedTtl);
  if (ttl !== undefined && now + ttl * 1000 > cap && req.scopePolicy !== 'intersect') {
    throw new CordonError(
      'invalid_grant',
      `expires_in ${ttl}s exceeds the ${Math.floor((cap - now) / 1000)}s the parent token and policy ${actorPolicy.name} allow`,
      { reason: 'lifetime_exceeded' },
    );
  }
  const expiresAt = ttl !== undefined ? Math.min(cap, now + ttl * 1000) : cap;
  if (expiresAt - now < 1000) throw new CordonError('invalid_grant', 'the parent token has no life left to hand down', { reason: 'lifetime_exhausted' });

  if (req.bindJkt !== undefined && !JKT_PATTERN.test(req.bindJkt))
    throw new CordonError('invalid_request', 'dpop_jkt must be a base64url SHA-256 JWK thumbprint', { reason: 'jkt_malformed' });
  if (actorPolicy.requireDpop && !req.bindJkt)
    throw new CordonError('invalid_request', `policy ${actorPolicy.name} requires DPoP: name the sub-agent's key with dpop_jkt`, { reason: 'dpop_required' });
  // DPoP binding is carried down the chain: a bound parent never yields a bearer child, and
  // neither does a chain any of whose policies requires DPoP.
  if (!req.bindJkt) {
    if (claims.cnf?.jkt)
      throw new CordonError('invalid_request', "the subject_token is DPoP-bound, so the sub-agent's token must be too: name its key with dpop_jkt", {
        reason: 'dpop_required',
      });
    const strict = [rootPolicy, ...between.map(([, p]) => p), callerPolicy].find((p) => p.requireDpop);
    if (strict)
      throw new CordonError('invalid_request', `policy ${strict.name}, earlier in this chain, requires DPoP: name the sub-agent's key with dpop_jkt`, {
        reason: 'dpop_required',
      });
  }

  const act: ActClaim = { sub: actor.id, act: claims.act ?? { sub: claims.client_id } };
  const newChain = [...chain, actor.id];
  return await issueToken(
    b,
    {
      sid: claims.sid,
      subject: claims.sub,
      clientId: actor.id,
      parentJti: claims.jti,
      scope,
      audience,
      task: claims.task ?? null,
      depth,
      act,
      cnfJkt: req.bindJkt ?? null,
      expiresAt,
    },
    { event: 'delegation.issue', chain: newChain, params: { requested_scope: req.scope, scope_policy: req.scopePolicy, audience, by: req.callerClientId } },
    { precheck: (tx) => assertStillLive(tx, claims.jti, b.clock.now()) },
  );
}

/**
 * The policies of the holders strictly between the root (depth 0) and the caller (depth
 * `callerDepth`), with their depth. A holder whose record or policy is gone fails closed.
 */
async function intermediatePolicies(b: Broker, chain: string[], callerDepth: number): Promise<Array<[number, Policy]>> {
  if (callerDepth < 2) return [];
  if (chain.length !== callerDepth + 1)
    throw new CordonError('invalid_grant', 'subject_token actor chain does not match its depth', { reason: 'chain_mismatch' });
  const ids = chain.slice(1, -1);
  const rows = await Promise.all(ids.map((id) => b.live.agents.get(b.read, id)));
  return rows.map((row, i) => {
    const policy = row ? b.policies.get(row.policy) : undefined;
    if (!policy)
      throw new CordonError('invalid_grant', 'a holder earlier in the chain is no longer bound to a loaded policy', { reason: 'chain_policy_missing' });
    return [i + 1, policy] as [number, Policy];
  });
}

/**
 * Inside the issuing transaction: the parent token, its session and its chain are still live. The
 * check before ran outside the transaction, and a cascade (or a disable) that commits in between
 * must not miss the new child: revocations write every descendant eagerly, so the parent's own row
 * says it all. On PostgreSQL the rows are share-locked (statesAtCommit), so a revocation's UPDATE of
 * them waits for this commit; for the cascade to see the new child there too, the revocation's
 * subtree walk locks the rows it reads (FOR UPDATE).
 */
async function assertStillLive(tx: Q, jti: string, now: number): Promise<void> {
  const st = (await statesAtCommit(tx, [jti], now)).get(jti)!;
  if (st.active) return;
  if (st.why === 'session_revoked' || st.why === 'session_expired')
    throw new CordonError('invalid_grant', 'the session of this token has ended or been revoked', { reason: `token_${st.why}` });
  if (st.why === 'agent_inactive') throw new CordonError('invalid_grant', 'an agent of this chain was disabled or revoked', { reason: 'token_agent_inactive' });
  throw new CordonError('invalid_grant', 'token has been revoked', { reason: 'token_revoked' });
}
