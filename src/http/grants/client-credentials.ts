import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Broker } from '../../broker.ts';
import { startSession } from '../../sessions/start.ts';
import type { Attempt } from '../../audit/attempt.ts';
import { audiences, callerRow, dpopOf, param, tokenResponse } from './params.ts';
import { providerClient } from '../internals.ts';

/** Session start: the agent authenticated itself; tokens/ decides the rest. */
export const grantType = 'client_credentials';
export const parameters = ['scope', 'task', 'resource', 'audience', 'session', 'expires_in'];
export const allowDuplicates = ['resource', 'audience'];

export async function handler(b: Broker, ctx: KoaContextWithOIDC, attempt: Attempt): Promise<void> {
  attempt.event = param(ctx, 'session') !== undefined ? 'token.issue' : 'session.open';
  const dpopJkt = await dpopOf(b, ctx);
  const r = await startSession(
    b,
    {
      clientId: providerClient(ctx)!.clientId,
      caller: callerRow(ctx),
      scope: param(ctx, 'scope'),
      task: param(ctx, 'task'),
      audience: audiences(ctx),
      requestedTtl: param(ctx, 'expires_in'),
      session: param(ctx, 'session'),
      dpopJkt,
    },
    attempt,
  );
  ctx.body = tokenResponse(r, { session_expires_at: Math.floor(r.sessionExpiresAt / 1000) });
}
