// Type-checked against the package's declarations (dist/*.d.ts), as a TypeScript user would.
import { CordonAgent, type BackendCredential, type SessionInfo } from 'cordon';
import { requireAgentToken, type AgentIdentity } from 'cordon/middleware';

export async function open(issuer: string, clientId: string, clientSecret: string): Promise<SessionInfo> {
  const agent = new CordonAgent({ issuer, clientId, clientSecret });
  return agent.startSession({ scope: ['docs:read'], task: 'typed' });
}
export const expiresAt = (c: BackendCredential): Date => c.expiresAt;
export const caller = (a: AgentIdentity): string => a.client_id;
export const mw = requireAgentToken({ issuer: 'http://127.0.0.1:8080', audience: 'https://tickets.internal' });
