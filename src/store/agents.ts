import { type Q, num } from './db.ts';

export type AgentStatus = 'active' | 'disabled' | 'revoked';
export type AuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt';

export interface Agent {
  id: string;
  name: string;
  policy: string;
  authMethod: AuthMethod;
  secretHash: string | null;
  jwks: { keys: Record<string, unknown>[] } | null;
  status: AgentStatus;
  createdAt: number;
  updatedAt: number;
}

const fromRow = (r: Record<string, unknown>): Agent => ({
  id: r.id as string,
  name: r.name as string,
  policy: r.policy as string,
  authMethod: r.auth_method as AuthMethod,
  secretHash: (r.secret_hash as string | null) ?? null,
  jwks: r.jwks ? JSON.parse(r.jwks as string) : null,
  status: r.status as AgentStatus,
  createdAt: num(r.created_at),
  updatedAt: num(r.updated_at),
});

export const agents = {
  async insert(q: Q, a: Agent): Promise<void> {
    await q('agents').insert({
      id: a.id,
      name: a.name,
      policy: a.policy,
      auth_method: a.authMethod,
      secret_hash: a.secretHash,
      jwks: a.jwks ? JSON.stringify(a.jwks) : null,
      status: a.status,
      created_at: a.createdAt,
      updated_at: a.updatedAt,
    });
  },
  async get(q: Q, id: string): Promise<Agent | undefined> {
    const r = await q('agents').where({ id }).first();
    return r ? fromRow(r) : undefined;
  },
  async byName(q: Q, name: string): Promise<Agent | undefined> {
    const r = await q('agents').where({ name }).first();
    return r ? fromRow(r) : undefined;
  },
  async list(q: Q): Promise<Agent[]> {
    return (await q('agents').orderBy('created_at').orderBy('name')).map(fromRow);
  },
  async listByPolicy(q: Q, policy: string): Promise<Agent[]> {
    return (await q('agents').where({ policy }).orderBy('name')).map(fromRow);
  },
  /**
   * Revocation is final: a revoked agent's row never changes status again, whatever a racing
   * enable or disable read before. Returns whether the row changed.
   */
  async setStatus(q: Q, id: string, status: AgentStatus, at: number): Promise<boolean> {
    return (await q('agents').where({ id }).whereNot({ status: 'revoked' }).update({ status, updated_at: at })) > 0;
  },
  /** New credentials for a live agent only; false when the agent is revoked. */
  async setSecret(q: Q, id: string, secretHash: string, at: number): Promise<boolean> {
    return (await q('agents').where({ id }).whereNot({ status: 'revoked' }).update({ secret_hash: secretHash, updated_at: at })) > 0;
  },
  async setJwks(q: Q, id: string, jwks: unknown, at: number): Promise<boolean> {
    return (
      (await q('agents')
        .where({ id })
        .whereNot({ status: 'revoked' })
        .update({ jwks: JSON.stringify(jwks), updated_at: at })) > 0
    );
  },
};
