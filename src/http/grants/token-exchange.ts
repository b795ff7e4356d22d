import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Broker } from '../../broker.ts';
import { CordonError } from '../../errors.ts';
import { TOKEN_TYPE_ACCESS, TOKEN_TYPE_BOOTSTRAP, GRANT_TOKEN_EXCHANGE } from '../../tokens/claims.ts';
import { delegate } from '../../delegation/delegate.ts';
import { WORKLOAD_CLIENT_ID, redeemBootstrapToken } from '../../sessions/bootstrap.ts';
import { redeemFederatedJwt } from '../../federation/exchange.ts';
import type { Attempt } from '../../audit/attempt.ts';
import { SESSION_OPENING_TYPES, assertWorkloadMayExchange } from '../../sessions/workload.ts';
import { clientAddressOf } from '../../audit/refusal-limiter.ts';
import { audiences, callerRow, dpopOf, param, tokenResponse } from './params.ts';
import { providerClient, providerParams } from '../internals.ts';

/**
 * RFC 8693 token exchange. The subject token's type picks the rule: an access token is
 * delegated to `requested_actor`; a bootstrap token or a federated JWT opens a session.
 *
 * The public client `cordon-workload` (no secret) may only open sessions that way: the agent
 * it becomes is named by the subject token. Delegation needs an authenticated agent.
 */
export const grantType = GRANT_TOKEN_EXCHANGE;
export const parameters = [
  'scope',
  'task',
  'resource',
  'audience',
  'subject_token',
  'subject_token_type',
  'actor_token',
  'actor_token_type',
  'requested_token_type',
  'requested_actor',
  'scope_policy',
  'expires_in',
  'dpop_jkt',
];
export const allowDuplicates = ['resource', 'audience'];

/** A parameter for the audit row, whatever shape it arrived in (never throws). */
const raw = (ctx: KoaContextWithOIDC, name: string, max: number): string | undefined => {
  const v = providerParams(ctx)[name];
  return v === undefined || v === null ? undefined : String(v).slice(0, max);
};

export async function handler(b: Broker, ctx: KoaContextWithOIDC, attempt: Attempt): Promise<void> {
  const clientId = providerClient(ctx)!.clientId;
  const workload = clientId === WORKLOAD_CLIENT_ID;
  // Refused before a rule takes over (missing or wrong parameters): the caller is the chain.
  attempt.event = 'token_exchange';
  attempt
    .by(clientId, workload ? null : [clientId])
    .note({ subject_token_type: raw(ctx, 'subject_token_type', 100), requested_actor: raw(ctx, 'requested_actor', 64), scope: raw(ctx, 'scope', 300) });
  await exchange(b, ctx, clientId, workload, attempt);
}

async function exchange(b: Broker, ctx: KoaContextWithOIDC, clientId: string, workload: boolean, attempt: Attempt): Promise<void> {
  const subjectToken = param(ctx, 'subject_token');
  const subjectType = param(ctx, 'subject_token_type');
  if (!subjectToken) throw new CordonError('invalid_request', 'subject_token is required', { reason: 'subject_token_missing' });
  if (!subjectType) throw new CordonError('invalid_request', 'subject_token_type is required', { reason: 'subject_type_missing' });
  if (param(ctx, 'actor_token') !== undefined && param(ctx, 'actor_token_type') === undefined)
    throw new CordonError('invalid_request', 'actor_token_type is required with actor_token', { reason: 'actor_type_missing' });
  if (param(ctx, 'actor_token') !== undefined)
    throw new CordonError('invalid_request', 'actor_token is not used by this broker: name the sub-agent with requested_actor', {
      reason: 'actor_token_unsupported',
    });
  if (param(ctx, 'actor_token_type') !== undefined)
    throw new CordonError('invalid_request', 'actor_token_type is only valid with actor_token', { reason: 'actor_type_without_token' });
  const requestedType = param(ctx, 'requested_token_type');
  if (requestedType !== undefined && requestedType !== TOKEN_TYPE_ACCESS)
    throw new CordonError('invalid_request', `requested_token_type must be ${TOKEN_TYPE_ACCESS}`, { reason: 'requested_type_unsupported' });
  if (workload) assertWorkloadMayExchange(subjectType);

  if (subjectType === TOKEN_TYPE_ACCESS) {
    const dpopJkt = await dpopOf(b, ctx);
    attempt.event = 'delegation.issue';
    const r = await delegate(
      b,
      {
        callerClientId: clientId,
        caller: callerRow(ctx),
        subjectToken,
        requestedActor: param(ctx, 'requested_actor'),
        scope: param(ctx, 'scope'),
        audience: audiences(ctx),
        scopePolicy: param(ctx, 'scope_policy'),
        requestedTtl: param(ctx, 'expires_in'),
        bindJkt: param(ctx, 'dpop_jkt'),
        dpopJkt,
      },
      attempt,
    );
    ctx.body = tokenResponse(r, { issued_token_type: TOKEN_TYPE_ACCESS });
    return;
  }

  if (SESSION_OPENING_TYPES.includes(subjectType)) {
    // These open a root session: delegation-only parameters would be silently meaningless, so they are refused.
    for (const p of ['scope_policy', 'dpop_jkt']) {
      if (param(ctx, p) !== undefined)
        throw new CordonError('invalid_request', `${p} applies to delegation only, not to ${subjectType}`, { reason: 'param_not_applicable' });
    }
    const dpopJkt = await dpopOf(b, ctx);
    const common = {
      callerClientId: workload ? null : clientId,
      clientAddress: clientAddressOf(ctx.req?.socket?.remoteAddress),
      scope: param(ctx, 'scope'),
      task: param(ctx, 'task'),
      audience: audiences(ctx),
      requestedTtl: param(ctx, 'expires_in'),
      dpopJkt,
    };
    let r;
    if (subjectType === TOKEN_TYPE_BOOTSTRAP) {
      if (param(ctx, 'requested_actor') !== undefined)
        throw new CordonError('invalid_request', 'requested_actor is not used with a bootstrap token: the token names its agent', {
          reason: 'param_not_applicable',
        });
      attempt.event = 'bootstrap.redeem';
      r = await redeemBootstrapToken(b, subjectToken, common, attempt);
    } else {
      attempt.event = 'federation.exchange';
      r = await redeemFederatedJwt(b, { ...common, subjectToken, requestedActor: param(ctx, 'requested_actor') }, attempt);
    }
    ctx.body = tokenResponse(r, { issued_token_type: TOKEN_TYPE_ACCESS, session_expires_at: Math.floor(r.sessionExpiresAt / 1000) });
    return;
  }
  throw new CordonError('invalid_request', `unsupported subject_token_type ${subjectType.slice(0, 100)}`, { reason: 'subject_type_unsupported' });
}
