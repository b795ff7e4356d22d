import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { agents, type Agent, type AuthMethod } from '../store/agents.ts';
import { type Q, transact } from '../store/db.ts';
import { revocations } from '../store/revocations.ts';
import { hashSecret } from '../keys/keyring.ts';
import { newId, newSecret, isWellFormedId } from '../ids.ts';
import { NAME_PATTERN } from '../policy/schema.ts';

export interface RegisterRequest {
  name: string;
  policy: string;
  auth: 'secret' | 'private_key_jwt';
  jwks?: unknown;
  actor?: string;
}

/** A client's public keys for private_key_jwt: asymmetric, public halves only. */
export function checkPublicJwks(jwks: unknown): { keys: Record<string, unknown>[] } {
  const keys = (jwks as { keys?: unknown })?.keys;
  if (!Array.isArray(keys) || keys.length === 0 || keys.length > 10)
    throw new CordonError('invalid_request', 'jwks must be {"keys":[…]} with 1 to 10 keys', { reason: 'jwks_malformed' });
  for (const k of keys as Record<string, unknown>[]) {
    if (typeof k !== 'object' || k === null) throw new CordonError('invalid_request', 'jwks holds a key that is not an object', { reason: 'jwks_malformed' });
    if (k.kty !== 'EC' && k.kty !== 'OKP' && k.kty !== 'RSA')
      throw new CordonError('invalid_request', `jwks key type ${String(k.kty)} is not allowed (EC, OKP or RSA only)`, { reason: 'jwks_symmetric' });
    if ('d' in k || 'p' in k || 'k' in k) throw new CordonError('invalid_request', 'jwks must hold public keys only', { reason: 'jwks_private' });
  }
  return { keys: keys as Record<string, unknown>[] };
}

export async function registerAgent(b: Broker, req: RegisterRequest): Promise<{ agent: Agent; clientSecret?: string }> {
  if (!NAME_PATTERN.test(req.name)) throw new CordonError('invalid_request', `agent name must match ${NAME_PATTERN}`, { reason: 'name_malformed' });
  if (!b.policies.get(req.policy))
    throw new CordonError('invalid_request', `no policy named "${req.policy}" (known: ${b.policies.names().join(', ') || 'none'})`, {
      reason: 'policy_unknown',
    });
  const at = b.clock.now();
  let clientSecret: string | undefined;
  let authMethod: AuthMethod;
  let jwks: Agent['jwks'] = null;
  if (req.auth === 'private_key_jwt') {
    authMethod = 'private_key_jwt';
    jwks = checkPublicJwks(req.jwks);
  } else {
    authMethod = 'client_secret_basic';
    clientSecret = newSecret();
  }
  const agent: Agent = {
    id: newId('agt'),
    name: req.name,
    policy: req.policy,
    authMethod,
    secretHash: clientSecret ? hashSecret(b.secretHashKey, clientSecret) : null,
    jwks,
    status: 'active',
    createdAt: at,
    updatedAt: at,
  };
  await transact(b.db, async (tx) => {
    if (await agents.byName(tx, req.name)) throw new CordonError('invalid_request', `an agent named "${req.name}" already exists`, { reason: 'name_taken' });
    await agents.insert(tx, agent);
    await appendAudit(tx, {
      at,
      event: 'agent.register',
      decision: 'info',
      agentId: agent.id,
      params: { name: agent.name, policy: agent.policy, auth_method: authMethod, by: req.actor ?? 'cli' },
    });
  });
  return { agent, clientSecret };
}

/** Accepts an agent id or a unique name, and refuses anything shaped like a path or a query. */
export async function findAgent(b: Broker, idOrName: string): Promise<Agent> {
  if (!isWellFormedId(idOrName) && !NAME_PATTERN.test(idOrName))
    throw new CordonError('invalid_request', 'agent id or name is malformed', { reason: 'agent_malformed' });
  const a = (await agents.get(b.db, idOrName)) ?? (await agents.byName(b.db, idOrName));
  if (!a) throw new CordonError('not_found', `no agent "${idOrName}"`, { reason: 'agent_unknown' });
  return a;
}

/**
 * Inside the changing transaction: every replica's caches drop what they hold of this agent (its
 * row, its tokens), whatever the change (an enable too: nothing stale either way).
 */
const announceChange = (tx: Q, id: string, at: number): Promise<void> => revocations.add(tx, [{ kind: 'agentrow', value: id, expiresAt: at, revokedAt: at }]);

const revokedAgent = (): CordonError => new CordonError('invalid_request', 'agent is revoked; register a new one', { reason: 'agent_revoked' });

export async function setAgentEnabled(b: Broker, idOrName: string, enabled: boolean, actor = 'cli'): Promise<Agent> {
  const a = await findAgent(b, idOrName);
  const status = enabled ? 'active' : 'disabled';
  const at = b.clock.now();
  // Decided inside the transaction: a revocation committed since the read above wins.
  await transact(b.db, async (tx) => {
    if (!(await agents.setStatus(tx, a.id, status, at))) throw revokedAgent();
    await announceChange(tx, a.id, at);
    await appendAudit(tx, { at, event: enabled ? 'agent.enable' : 'agent.disable', decision: 'info', agentId: a.id, params: { by: actor } });
  });
  b.live.agentsChanged([a.id]);
  return { ...a, status, updatedAt: at };
}

/** New secret (shown once) or new public keys; the old credential stops working at once. */
export async function rotateAgentCredential(b: Broker, idOrName: string, jwks?: unknown, actor = 'cli'): Promise<{ agent: Agent; clientSecret?: string }> {
  const a = await findAgent(b, idOrName);
  const at = b.clock.now();
  if (a.authMethod === 'private_key_jwt') {
    if (jwks === undefined)
      throw new CordonError('invalid_request', 'this agent uses private_key_jwt: give the new public keys with --jwks FILE', { reason: 'jwks_missing' });
    const checked = checkPublicJwks(jwks);
    await transact(b.db, async (tx) => {
      if (!(await agents.setJwks(tx, a.id, checked, at))) throw revokedAgent();
      await announceChange(tx, a.id, at);
      await appendAudit(tx, { at, event: 'agent.rotate', decision: 'info', agentId: a.id, params: { auth_method: a.authMethod, by: actor } });
    });
    b.live.agentsChanged([a.id]);
    return { agent: { ...a, jwks: checked, updatedAt: at } };
  }
  if (jwks !== undefined)
    throw new CordonError(
      'invalid_request',
      'this agent authenticates with a client secret: rotate gives it a new secret, and --jwks goes with private_key_jwt agents only',
      { reason: 'jwks_unexpected' },
    );
  const clientSecret = newSecret();
  await transact(b.db, async (tx) => {
    if (!(await agents.setSecret(tx, a.id, hashSecret(b.secretHashKey, clientSecret), at))) throw revokedAgent();
    await announceChange(tx, a.id, at);
    await appendAudit(tx, { at, event: 'agent.rotate', decision: 'info', agentId: a.id, params: { auth_method: a.authMethod, by: actor } });
  });
  b.live.agentsChanged([a.id]);
  return { agent: { ...a, updatedAt: at }, clientSecret };
}
