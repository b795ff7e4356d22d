import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Broker } from '../../broker.ts';
import { CordonError } from '../../errors.ts';
import { TOKEN_TYPE_ACCESS, TOKEN_TYPE_BOOTSTRAP, TOKEN_TYPE_JWT, GRANT_TOKEN_EXCHANGE } from '../../tokens/claims.ts';
import { delegate } from '../../tokens/delegate.ts';
import { audiences, dpopOf, param, tokenResponse } from './params.ts';

/**
 * RFC 8693 token exchange. The subject token's type picks the rule: an access token is
 * delegated to `requested_actor`; a bootstrap token or a federated JWT opens a session.
 */
export const grantType = GRANT_TOKEN_EXCHANGE;
export const parameters = ['scope', 'task', 'resource', 'audience', 'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'requested_actor', 'scope_policy', 'expires_in', 'dpop_jkt'];
export const allowDuplicates = ['resource', 'audience'];

export async function handler(b: Broker, ctx: KoaContextWithOIDC): Promise<void> {
  const subjectToken = param(ctx, 'subject_token');
  const subjectType = param(ctx, 'subject_token_type');
  if (!subjectToken) throw new CordonError('invalid_request', 'subject_token is required');
  if (!subjectType) throw new CordonError('invalid_request', 'subject_token_type is required');
  if (param(ctx, 'actor_token') !== undefined && param(ctx, 'actor_token_type') === undefined) throw new CordonError('invalid_request', 'actor_token_type is required with actor_token');
  if (param(ctx, 'actor_token') !== undefined) throw new CordonError('invalid_request', 'actor_token is not used by this broker: name the sub-agent with requested_actor');
  const requestedType = param(ctx, 'requested_token_type');
  if (requestedType !== undefined && requestedType !== TOKEN_TYPE_ACCESS) throw new CordonError('invalid_request', `requested_token_type must be ${TOKEN_TYPE_ACCESS}`);
  const dpopJkt = await dpopOf(b, ctx);
  const clientId = ctx.oidc.client!.clientId;

  if (subjectType === TOKEN_TYPE_ACCESS) {
    const r = await delegate(b, {
      callerClientId: clientId,
      subjectToken,
      requestedActor: param(ctx, 'requested_actor'),
      scope: param(ctx, 'scope'),
      audience: audiences(ctx),
      scopePolicy: param(ctx, 'scope_policy'),
      requestedTtl: param(ctx, 'expires_in'),
      bindJkt: param(ctx, 'dpop_jkt'),
      dpopJkt,
    });
    ctx.body = tokenResponse(r, { issued_token_type: TOKEN_TYPE_ACCESS });
    return;
  }
  if (subjectType === TOKEN_TYPE_BOOTSTRAP || subjectType === TOKEN_TYPE_JWT) {
    throw new CordonError('invalid_request', `subject_token_type ${subjectType} is not enabled on this broker`, { reason: 'subject_type_unsupported' });
  }
  throw new CordonError('invalid_request', `unsupported subject_token_type ${subjectType.slice(0, 100)}`, { reason: 'subject_type_unsupported' });
}
