/**
 * Liveness: the one place that answers "is this token live?" — its own row, its session, and every
 * agent of its chain (root, the links between, the holder) — for every caller: introspection and
 * bearer use read it (loadTokenView + stateOf + chainActive), and writes that must not commit for a
 * dead token (a delegation, a session renewal, a backend credential) ask it again inside their
 * transaction (statesAtCommit, sessionStateAtCommit). Revocation cascades are written eagerly, so
 * a token's own row says whether an ancestor was revoked.
 */
import type { Q } from './db.ts';
import { isPostgres, num, numOrNull } from './db.ts';
import type { TokenRecord } from './tokens.ts';

export type InactiveReason = 'unknown' | 'expired' | 'revoked' | 'session_revoked' | 'session_expired' | 'agent_inactive' | 'mismatch';
export type TokenState = { active: true } | { active: false; why: InactiveReason };

/** An RFC 8693 actor claim as stored with the token. */
export interface StoredAct {
  sub: string;
  act?: StoredAct;
}

/** A token's record with what its liveness depends on: its session, its holder and the session's root. */
export interface TokenView extends Omit<TokenRecord, 'kid' | 'act'> {
  act: StoredAct | null;
  /** The principal every token of the session acts for (the root agent, or the federated subject). */
  sessionSubject: string;
  /** The holder's name (for backend metadata). */
  holderName: string;
  sessionAgentId: string;
  sessionTask: string | null;
  sessionExpiresAt: number;
  sessionRevokedAt: number | null;
  holderStatus: string;
  /** The status of the agent that opened the session: a disabled or revoked root takes its whole chain down. */
  rootStatus: string;
  rootName: string;
  /** The root's policy: it defines what the session may do (delegation bounds, credentials). */
  rootPolicy: string;
}

const VIEW_COLUMNS = [
  't.jti',
  't.sid',
  't.client_id',
  't.parent_jti',
  't.scope',
  't.audience',
  't.depth',
  't.act',
  't.issued_at',
  't.expires_at',
  't.revoked_at',
  't.cnf_jkt',
  'a.name as a_name',
  'a.status as a_status',
  's.agent_id as s_agent',
  's.subject as s_subject',
  's.task as s_task',
  's.expires_at as s_exp',
  's.revoked_at as s_rev',
  'r.status as r_status',
  'r.name as r_name',
  'r.policy as r_policy',
];

const viewQuery = (q: Q) =>
  q('tokens as t')
    .join('sessions as s', 's.sid', 't.sid')
    .join('agents as a', 'a.id', 't.client_id')
    .join('agents as r', 'r.id', 's.agent_id')
    .select(VIEW_COLUMNS);

const fromRow = (r: Record<string, any>): TokenView => ({
  jti: r.jti,
  sid: r.sid,
  clientId: r.client_id,
  parentJti: r.parent_jti ?? null,
  scope: r.scope,
  audience: JSON.parse(r.audience),
  depth: num(r.depth),
  act: r.act ? JSON.parse(r.act) : null,
  issuedAt: num(r.issued_at),
  expiresAt: num(r.expires_at),
  revokedAt: numOrNull(r.revoked_at),
  cnfJkt: r.cnf_jkt ?? null,
  sessionSubject: r.s_subject,
  holderName: r.a_name,
  sessionAgentId: r.s_agent,
  sessionTask: r.s_task ?? null,
  sessionExpiresAt: num(r.s_exp),
  sessionRevokedAt: numOrNull(r.s_rev),
  holderStatus: r.a_status,
  rootStatus: r.r_status,
  rootName: r.r_name,
  rootPolicy: r.r_policy,
});

/** One query: the token, its session, its holder and the session's root. */
export async function loadTokenView(q: Q, jti: string): Promise<TokenView | undefined> {
  const r = await viewQuery(q).where('t.jti', jti).first();
  return r ? fromRow(r) : undefined;
}

/** The verdict of the token's own row, its session, its holder and its root at `now`. */
export function stateOf(v: TokenView | undefined, now: number): TokenState {
  if (!v) return { active: false, why: 'unknown' };
  if (v.revokedAt !== null) return { active: false, why: 'revoked' };
  if (v.sessionRevokedAt !== null) return { active: false, why: 'session_revoked' };
  if (v.expiresAt <= now) return { active: false, why: 'expired' };
  if (v.sessionExpiresAt <= now) return { active: false, why: 'session_expired' };
  if (v.holderStatus !== 'active' || v.rootStatus !== 'active') return { active: false, why: 'agent_inactive' };
  return { active: true };
}

/** Every agent of the token's chain, root first, holder last (a malformed stored act names nobody more). */
export function chainAgents(v: Pick<TokenView, 'sessionAgentId' | 'clientId' | 'act'>): string[] {
  const holders: string[] = [];
  let a: StoredAct | undefined = v.act ?? undefined;
  while (a && typeof a === 'object' && typeof a.sub === 'string' && holders.length < 64) {
    holders.push(a.sub);
    a = a.act;
  }
  holders.reverse();
  return [...new Set([v.sessionAgentId, ...holders, v.clientId])];
}

/**
 * Are the agents between the root and the holder active? (The view carries the root's and the
 * holder's status; a chain of depth two or more has links in between, read here in one query.)
 */
export async function chainActive(q: Q, v: TokenView): Promise<boolean> {
  if (v.depth < 2) return true;
  const between = chainAgents(v).filter((id) => id !== v.sessionAgentId && id !== v.clientId);
  if (!between.length) return true;
  const rows = await q('agents').select('id', 'status').whereIn('id', between);
  return rows.length === between.length && rows.every((r) => r.status === 'active');
}

/**
 * Inside a writing transaction: the state of each of these tokens as the transaction commits it,
 * chain agents included. On PostgreSQL the token rows are share-locked in jti order, then the
 * agent rows in id order: a revocation or a disable committing meanwhile is waited for and seen,
 * one starting later waits for this commit, and writers on several replicas lock in one order.
 */
export async function statesAtCommit(tx: Q, jtis: string[], now: number): Promise<Map<string, TokenState>> {
  const pg = isPostgres(tx);
  let q = viewQuery(tx)
    .whereIn('t.jti', [...new Set(jtis)])
    .orderBy('t.jti');
  if (pg) q = q.forShare('t');
  const views = (await q).map(fromRow);
  const ids = [...new Set(views.flatMap(chainAgents))].sort();
  let aq = tx('agents').select('id', 'status').whereIn('id', ids).orderBy('id');
  if (pg) aq = aq.forShare();
  const active = new Set((await aq).filter((a) => a.status === 'active').map((a) => a.id as string));
  const out = new Map<string, TokenState>(jtis.map((j) => [j, { active: false, why: 'unknown' }]));
  for (const v of views) {
    const s = stateOf(v, now);
    out.set(v.jti, s.active && !chainAgents(v).every((id) => active.has(id)) ? { active: false, why: 'agent_inactive' } : s);
  }
  return out;
}

/** Inside a writing transaction: is the session still unrevoked and unexpired, and its root agent active? */
export async function sessionStateAtCommit(tx: Q, sid: string, now: number): Promise<TokenState> {
  let q = tx('sessions as s').join('agents as r', 'r.id', 's.agent_id').select('s.revoked_at', 's.expires_at', 'r.status').where('s.sid', sid);
  if (isPostgres(tx)) q = q.forShare('s');
  const r = await q.first();
  if (!r) return { active: false, why: 'unknown' };
  if (numOrNull(r.revoked_at) !== null) return { active: false, why: 'session_revoked' };
  if (num(r.expires_at) <= now) return { active: false, why: 'session_expired' };
  if (r.status !== 'active') return { active: false, why: 'agent_inactive' };
  return { active: true };
}
