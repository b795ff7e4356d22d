import { CordonError } from '../errors.ts';
import type { Agent } from '../store/agents.ts';

/** What an authenticated agent asks of the broker's own endpoints. */
export type AgentUse = 'introspect' | 'revoke';

/**
 * May this authenticated agent do this, given its standing? Any agent in good standing may
 * introspect: resource servers register as agents with a scope-less policy, so no policy is
 * consulted. A disabled agent may still revoke what it holds (cleaning up is always allowed), but
 * may not use the broker otherwise. (A revoked agent does not authenticate at all.)
 */
export function assertMayUse(agent: Pick<Agent, 'status'>, use: AgentUse): void {
  if (agent.status === 'disabled' && use !== 'revoke') throw new CordonError('invalid_client', 'agent is disabled', { reason: 'client_auth_failed' });
}
