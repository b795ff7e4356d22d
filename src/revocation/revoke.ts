import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { type Q, transact } from '../store/db.ts';
import { agents } from '../store/agents.ts';
import { sessions } from '../store/sessions.ts';
import { tokens } from '../store/tokens.ts';
import { revocations, type Revocation } from '../store/revocations.ts';
import { isWellFormedId } from '../ids.ts';
import { verifySignature } from '../tokens/verify.ts';

export interface RevokeOutcome {
  tokens: string[];
  sessions: string[];
  /** For a token revocation: the revoked token's session and depth (a root token's session stays open). */
  token?: { sid: string; depth: number };
}

export interface RevokedSet {
  sids: string[];
  jtis: string[];
}

/** After commit: backend credentials tied to what was revoked die too (providers listen here). */
async function notify(b: Broker, r: RevokedSet): Promise<void> {
  if (!r.sids.length && !r.jtis.length) return;
  for (const f of b.hooks.onRevoked) {
    try {
      await f(r);
    } catch (e) {
      // The revocation itself is committed; the sweeper retries backend cleanup.
      b.log.error({ err: (e as Error).message }, 'backend cleanup after revocation failed; the sweeper will retry');
    }
  }
}

type FeedEntry = Omit<Revocation, 'seq'>;

/**
 * The feed rows of a revocation are written last, just before its audit row: after every row lock
 * the transaction takes, so the feed's lock (which makes seq order commit order) never waits on them.
 */
async function finish(tx: Q, feed: FeedEntry[], audit: Parameters<typeof appendAudit>[1]): Promise<void> {
  await revocations.add(tx, feed);
  await appendAudit(tx, audit);
}

/** Revokes a token and every token delegated from it; returns the jtis it changed and their feed rows. */
async function revokeSubtreeTx(tx: Q, jti: string, at: number, feed: FeedEntry[]): Promise<string[]> {
  const tree = await tokens.subtree(tx, jti, { lock: true });
  const changed = await tokens.revokeMany(
    tx,
    tree.map((t) => t.jti),
    at,
  );
  const byJti = new Map(tree.map((t) => [t.jti, t]));
  feed.push(...changed.map((j) => ({ kind: 'jti' as const, value: j, expiresAt: byJti.get(j)!.expiresAt, revokedAt: at })));
  return changed;
}

export async function revokeTokenChain(b: Broker, jti: string, by: { actor: string; via: string }): Promise<RevokeOutcome> {
  if (!isWellFormedId(jti)) throw new CordonError('invalid_request', 'token id is malformed', { reason: 'jti_malformed' });
  const at = b.clock.now();
  const result = await transact(b.db, async (tx) => {
    const root = await tokens.get(tx, jti);
    if (!root) throw new CordonError('not_found', `no token with jti ${jti}`, { reason: 'token_unknown' });
    const feed: FeedEntry[] = [];
    const changed = await revokeSubtreeTx(tx, jti, at, feed);
    await finish(tx, feed, {
      at,
      event: 'revoke',
      decision: 'allow',
      agentId: root.clientId,
      sid: root.sid,
      jti,
      reason: `token chain revoked by ${by.actor}`,
      params: { via: by.via, target: 'token', revoked_count: changed.length, revoked_jtis: changed.slice(0, 50) },
    });
    return { tokens: changed, sessions: [], token: { sid: root.sid, depth: root.depth } };
  });
  await notify(b, { sids: [], jtis: result.tokens });
  return result;
}

async function revokeSessionsTx(tx: Q, sids: Array<{ sid: string; expiresAt: number }>, at: number, reason: string, feed: FeedEntry[]): Promise<string[]> {
  const done: string[] = [];
  for (const s of sids) {
    if (await sessions.revoke(tx, s.sid, at, reason)) {
      await tokens.revokeSession(tx, s.sid, at);
      done.push(s.sid);
      feed.push({ kind: 'sid', value: s.sid, expiresAt: s.expiresAt, revokedAt: at });
    }
  }
  return done;
}

export async function revokeSession(b: Broker, sid: string, by: { actor: string; via: string }): Promise<RevokeOutcome> {
  if (!isWellFormedId(sid)) throw new CordonError('invalid_request', 'session id is malformed', { reason: 'sid_malformed' });
  const at = b.clock.now();
  const result = await transact(b.db, async (tx) => {
    const s = await sessions.get(tx, sid);
    if (!s) throw new CordonError('not_found', `no session ${sid}`, { reason: 'session_unknown' });
    const feed: FeedEntry[] = [];
    const done = await revokeSessionsTx(tx, [{ sid, expiresAt: s.expiresAt }], at, `revoked by ${by.actor}`, feed);
    await finish(tx, feed, {
      at,
      event: 'revoke',
      decision: 'allow',
      agentId: s.agentId,
      sid,
      reason: `session revoked by ${by.actor}`,
      params: { via: by.via, target: 'session', already_revoked: done.length === 0 },
    });
    return { tokens: [], sessions: done };
  });
  await notify(b, { sids: result.sessions, jtis: [] });
  return result;
}

/** Revokes the agent itself, every live session it opened and every token issued to it elsewhere, with their subtrees. */
export async function revokeAgent(b: Broker, agentId: string, by: { actor: string; via: string }): Promise<RevokeOutcome> {
  if (!isWellFormedId(agentId)) throw new CordonError('invalid_request', 'agent id is malformed', { reason: 'agent_malformed' });
  const at = b.clock.now();
  const result = await transact(b.db, async (tx) => {
    const agent = await agents.get(tx, agentId);
    if (!agent) throw new CordonError('not_found', `no agent ${agentId}`, { reason: 'agent_unknown' });
    await agents.setStatus(tx, agentId, 'revoked', at);
    const feed: FeedEntry[] = [];
    const live = await sessions.liveSidsOfAgent(tx, agentId, at);
    const sids = await revokeSessionsTx(tx, live, at, `agent revoked by ${by.actor}`, feed);
    const jtis: string[] = [];
    for (const jti of await tokens.liveHeldBy(tx, agentId, at)) jtis.push(...(await revokeSubtreeTx(tx, jti, at, feed)));
    feed.push({ kind: 'agent', value: agentId, expiresAt: at + 365 * 86400_000, revokedAt: at });
    await finish(tx, feed, {
      at,
      event: 'revoke',
      decision: 'allow',
      agentId,
      reason: `agent revoked by ${by.actor}`,
      params: { via: by.via, target: 'agent', sessions: sids.length, tokens: jtis.length },
    });
    return { tokens: jtis, sessions: sids };
  });
  // Tokens it holds only as a link of a chain are dropped from memory too (other replicas: the feed's agent row).
  b.live.agentsChanged([agentId]);
  await notify(b, { sids: result.sessions, jtis: result.tokens });
  return result;
}

/**
 * RFC 7009 at /revoke: the caller must hold the token or an ancestor of it. Tokens we cannot
 * verify are ignored with success, as §2.2 says; a token held by someone else is refused.
 */
/** `callerClientId` null: the public workload client, which proves nothing but possession of the token. */
export async function revokeByHolder(b: Broker, callerClientId: string | null, token: unknown, opts: { endSession?: boolean } = {}): Promise<void> {
  let claims;
  try {
    claims = await verifySignature(b, token, 'invalid_token');
  } catch (e) {
    if (e instanceof CordonError) return;
    throw e;
  }
  const rec = await tokens.get(b.db, claims.jti);
  if (!rec) return;
  if (callerClientId === null) {
    // Without client authentication only a secretless session's own root token may be used, and only by possession.
    const s = await sessions.get(b.db, rec.sid);
    if (!s || s.origin === 'client_credentials' || rec.depth !== 0)
      throw new CordonError('invalid_client', 'authenticate as the agent holding this token', { reason: 'client_auth_failed' });
    callerClientId = rec.clientId;
  }
  if (opts.endSession) {
    // Ending the session is the opener's call: the agent that opened it, holding a token of it.
    const s = await sessions.get(b.db, rec.sid);
    if (!s || s.agentId !== callerClientId || rec.clientId !== callerClientId) {
      throw new CordonError('unauthorized_client', 'only the agent that opened a session may end it', { reason: 'end_session_not_owner' });
    }
    if (s.revokedAt === null) await revokeSession(b, s.sid, { actor: callerClientId, via: 'oauth-revoke' });
    return;
  }
  if (rec.clientId !== callerClientId) {
    // An orchestrator may revoke what it handed down: walk up the recorded chain.
    let p = rec.parentJti;
    let allowed = false;
    for (let hops = 0; p && hops < 32; hops++) {
      const parent = await tokens.get(b.db, p);
      if (!parent) break;
      if (parent.clientId === callerClientId) {
        allowed = true;
        break;
      }
      p = parent.parentJti;
    }
    if (!allowed)
      throw new CordonError('unauthorized_client', 'this token was not issued to the caller or to one of its delegates', { reason: 'revoke_not_holder' });
  }
  if (rec.revokedAt === null) await revokeTokenChain(b, rec.jti, { actor: callerClientId, via: 'oauth-revoke' });
}
