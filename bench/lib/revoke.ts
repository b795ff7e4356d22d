import { Attempt } from '../../src/audit/attempt.ts';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Broker } from '../../src/broker.ts';
import { startSession } from '../../src/sessions/start.ts';
import { revokeSession, revokeTokenChain } from '../../src/revocation/revoke.ts';

export interface RevokeResult {
  name: string;
  tokens: number;
  setupMs: number;
  revokeMs: number;
  revokedTokens: number;
  revokedSessions: number;
}

/**
 * A session whose root token has `n - 1` descendants, written straight into the tokens table
 * (what many delegations would leave behind: root → 100 depth-1 tokens → the rest at depth 2).
 */
async function sessionWithTokens(b: Broker, plannerId: string, readerId: string, n: number): Promise<{ sid: string; rootJti: string; setupMs: number }> {
  const t0 = performance.now();
  const s = await startSession(b, { clientId: plannerId, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test'));
  const now = Date.now();
  const base = {
    sid: s.sid,
    scope: 'docs:read',
    audience: JSON.stringify([b.config.issuer]),
    kid: b.keys.active().kid,
    issued_at: now,
    expires_at: now + 10 * 60_000,
    revoked_at: null,
    cnf_jkt: null,
  };
  const rows: Record<string, unknown>[] = [];
  const level1: string[] = [];
  for (let i = 0; i < Math.min(100, n - 1); i++) {
    const jti = randomBytes(16).toString('base64url');
    level1.push(jti);
    rows.push({ ...base, jti, client_id: readerId, parent_jti: s.claims.jti, depth: 1, act: JSON.stringify({ sub: readerId, act: { sub: plannerId } }) });
  }
  for (let i = 0; rows.length < n - 1; i++) {
    rows.push({
      ...base,
      jti: randomBytes(16).toString('base64url'),
      client_id: readerId,
      parent_jti: level1[i % level1.length],
      depth: 2,
      act: JSON.stringify({ sub: readerId, act: { sub: readerId, act: { sub: plannerId } } }),
    });
  }
  await b.db.transaction(async (tx) => {
    // 13 columns a row; 60 rows stay under SQLite's default 999 bound variables.
    for (let i = 0; i < rows.length; i += 60) await tx('tokens').insert(rows.slice(i, i + 60));
  });
  return { sid: s.sid, rootJti: s.claims.jti, setupMs: performance.now() - t0 };
}

/** Scenario 4: `revokeSession` on a session holding 10,000 tokens, and for comparison `revokeTokenChain` on a root with as many descendants. */
export async function revokeScenarios(b: Broker, plannerId: string, readerId: string, n = 10_000): Promise<RevokeResult[]> {
  const out: RevokeResult[] = [];
  {
    const { sid, setupMs } = await sessionWithTokens(b, plannerId, readerId, n);
    const live = Number((await b.db('tokens').where({ sid }).whereNull('revoked_at').count({ c: '*' }).first())?.c);
    const t0 = performance.now();
    const r = await revokeSession(b, sid, { actor: 'bench', via: 'bench' });
    const revokeMs = performance.now() - t0;
    const left = Number((await b.db('tokens').where({ sid }).whereNull('revoked_at').count({ c: '*' }).first())?.c);
    if (left !== 0) throw new Error(`revokeSession left ${left} live tokens`);
    out.push({ name: `revokeSession (${live} tokens)`, tokens: live, setupMs, revokeMs, revokedTokens: live - left, revokedSessions: r.sessions.length });
  }
  {
    const { rootJti, setupMs } = await sessionWithTokens(b, plannerId, readerId, n);
    const t0 = performance.now();
    const r = await revokeTokenChain(b, rootJti, { actor: 'bench', via: 'bench' });
    const revokeMs = performance.now() - t0;
    out.push({ name: `revokeTokenChain (root + ${n - 1})`, tokens: n, setupMs, revokeMs, revokedTokens: r.tokens.length, revokedSessions: 0 });
  }
  return out;
}
