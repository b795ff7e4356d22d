import { Attempt } from '../../src/audit/attempt.ts';
import { randomBytes } from 'node:crypto';
import type { Broker } from '../../src/broker.ts';
import { agents } from '../../src/store/agents.ts';
import { appendAudit } from '../../src/store/audit-chain.ts';
import { signAccessToken } from '../../src/tokens/mint.ts';
import { startSession } from '../../src/sessions/start.ts';
import { delegate } from '../../src/delegation/delegate.ts';
import { introspect } from '../../src/tokens/introspect.ts';
import { hashSecret } from '../../src/keys/keyring.ts';
import type { AccessTokenClaims } from '../../src/tokens/claims.ts';
import { rate, type RateResult } from './extras.ts';

export interface Breakdown {
  queriesPerSessionStart: number;
  steps: RateResult[];
}

/**
 * Session start taken apart in-process (no HTTP, no oidc-provider): what each step costs alone,
 * sequentially (1 in flight, latency) and under concurrency (20 in flight, throughput).
 */
export async function sessionStartBreakdown(b: Broker, plannerId: string, seconds = 2): Promise<Breakdown> {
  const claims: AccessTokenClaims = {
    iss: b.config.issuer,
    sub: plannerId,
    aud: b.config.issuer,
    iat: 1,
    nbf: 1,
    exp: 2e9,
    jti: 'x'.repeat(22),
    client_id: plannerId,
    scope: 'docs:read web:search',
    sid: 'ses_xxxxxxxxxxxxxxxxxxxxxx',
    cordon_depth: 0,
  };
  let queries = 0;
  const count = () => queries++;
  b.db.on('query', count);
  await startSession(b, { clientId: plannerId, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test'));
  b.db.off('query', count);

  const steps: RateResult[] = [];
  const both = async (name: string, op: () => Promise<unknown>) => {
    steps.push(await rate(`${name} (1 in flight)`, op, seconds, 1));
    steps.push(await rate(`${name} (20 in flight)`, op, seconds, 20));
  };
  // The driver alone: statements on the raw node-sqlite3 connection knex holds (no knex, no pool).
  type Raw = {
    run(sql: string, params: unknown[], cb: (e: Error | null) => void): void;
    get(sql: string, params: unknown[], cb: (e: Error | null, row?: Record<string, unknown>) => void): void;
  };
  const conn = (await b.db.client.acquireConnection()) as Raw;
  const run = (sql: string, params: unknown[] = []) => new Promise<void>((res, rej) => conn.run(sql, params, (e) => (e ? rej(e) : res())));
  const get = (sql: string, params: unknown[] = []) =>
    new Promise<Record<string, unknown> | undefined>((res, rej) => conn.get(sql, params, (e, row) => (e ? rej(e) : res(row))));
  try {
    await both('raw sqlite3 SELECT 1 (driver round trip only)', () => get('SELECT 1'));
    // The same writes startSession makes, as plain SQL in one transaction on the raw connection:
    // one caller at a time, as the single connection serialises them anyway.
    const kid = b.keys.active().kid;
    const rawTx = async () => {
      const now = Date.now();
      const sid = `ses_${randomBytes(16).toString('base64url')}`;
      const jti = randomBytes(16).toString('base64url');
      await run('BEGIN');
      await run('INSERT INTO sessions (sid, agent_id, task, scope, audience, origin, subject, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?)', [
        sid,
        plannerId,
        null,
        'docs:read web:search',
        '["x"]',
        'client_credentials',
        plannerId,
        now,
        now + 3600_000,
      ]);
      await run(
        'INSERT INTO tokens (jti, sid, client_id, parent_jti, scope, audience, depth, act, cnf_jkt, kid, issued_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)',
        [jti, sid, plannerId, null, 'docs:read web:search', '["x"]', 0, null, null, kid, now, now + 900_000],
      );
      const head = await get('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1');
      await run('INSERT INTO audit (seq, at, event, decision, agent_id, sid, jti, chain, reason, params, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)', [
        Number(head?.seq ?? 0) + 1,
        now,
        'bench.raw',
        'info',
        plannerId,
        sid,
        jti,
        null,
        null,
        '{}',
        String(head?.hash ?? ''),
        'f'.repeat(64),
      ]);
      await run('COMMIT');
    };
    steps.push(await rate('raw sqlite3: BEGIN + the 4 session-start statements + COMMIT (1 in flight)', rawTx, seconds, 1));
    steps.push(
      await rate(
        'raw sqlite3: BEGIN; COMMIT (1 in flight)',
        async () => {
          await run('BEGIN');
          await run('COMMIT');
        },
        seconds,
        1,
      ),
    );
  } finally {
    await b.db.client.releaseConnection(conn);
  }
  {
    const kid = b.keys.active().kid;
    await both('knex: transaction with the same 4 statements', () =>
      b.db.transaction(async (tx) => {
        const now = Date.now();
        const sid = `ses_${randomBytes(16).toString('base64url')}`;
        const jti = randomBytes(16).toString('base64url');
        await tx('sessions').insert({
          sid,
          agent_id: plannerId,
          task: null,
          scope: 'docs:read web:search',
          audience: '["x"]',
          origin: 'client_credentials',
          subject: plannerId,
          created_at: now,
          expires_at: now + 3600_000,
        });
        await tx('tokens').insert({
          jti,
          sid,
          client_id: plannerId,
          parent_jti: null,
          scope: 'docs:read web:search',
          audience: '["x"]',
          depth: 0,
          act: null,
          cnf_jkt: null,
          kid,
          issued_at: now,
          expires_at: now + 900_000,
        });
        const head = await tx('audit').select('seq', 'hash').orderBy('seq', 'desc').first();
        await tx('audit').insert({
          seq: Number(head?.seq ?? 0) + 1,
          at: now,
          event: 'bench.knex',
          decision: 'info',
          agent_id: plannerId,
          sid,
          jti,
          chain: null,
          reason: null,
          params: '{}',
          prev_hash: String(head?.hash ?? ''),
          hash: 'f'.repeat(64),
        });
      }),
    );
  }
  await both('knex SELECT 1', () => b.db.raw('SELECT 1'));
  await both('HMAC client secret check', async () => hashSecret(b.secretHashKey, 'a'.repeat(43)));
  await both('signAccessToken (jose EdDSA)', () => signAccessToken(b.keys, claims));
  await both('agents.get (one SELECT)', () => agents.get(b.db, plannerId));
  await both('empty transaction (BEGIN/COMMIT)', () => b.db.transaction(async () => {}));
  await both('appendAudit in its own transaction', () =>
    b.db.transaction((tx) =>
      appendAudit(tx, { at: Date.now(), event: 'policy.load', decision: 'info', params: { scope: 'docs:read web:search', exp: 1, depth: 0 } }),
    ),
  );
  await both('startSession (whole decision, no HTTP)', () =>
    startSession(b, { clientId: plannerId, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test')),
  );
  return { queriesPerSessionStart: queries, steps };
}

export function printBreakdown(d: Breakdown): void {
  console.log(`\nsession start in-process, step by step (${d.queriesPerSessionStart} SQL statements per startSession on the single SQLite connection):`);
  for (const s of d.steps)
    console.log(`  ${s.name.padEnd(56)} ${Math.round(s.opsPerSec).toString().padStart(7)}/s  ${s.usPerOp.toFixed(0).padStart(6)} µs/op wall`);
}

/**
 * SQL statements one call issues on the broker's connections (knex 'query' events, BEGIN and COMMIT
 * included; the read pool too, a separate one on a SQLite file), without the live cache's feed polls.
 */
export async function countQueries(b: Broker, fn: () => Promise<unknown>): Promise<{ count: number; statements: string[] }> {
  const statements: string[] = [];
  const on = (q: { sql: string }) => {
    if (!/from [`"]revocations[`"] where [`"]seq[`"] >/.test(q.sql)) statements.push(q.sql.replace(/\s+/g, ' ').slice(0, 140));
  };
  const pools = b.read === b.db ? [b.db] : [b.db, b.read];
  for (const p of pools) p.on('query', on);
  try {
    await fn();
  } finally {
    for (const p of pools) p.off('query', on);
  }
  return { count: statements.length, statements };
}

/**
 * Statements per decision, in-process, in the steady state of a served broker: its live cache
 * started and each decision made once before (agent rows and the subject token are then in memory).
 * Over HTTP, client authentication reads the agent from the same memory.
 */
export async function sqlPerDecision(b: Broker, plannerId: string, readerId: string): Promise<Record<string, { count: number; statements: string[] }>> {
  await b.live.start();
  try {
    const s = await startSession(b, { clientId: plannerId, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test'));
    const decisions = {
      startSession: () => startSession(b, { clientId: plannerId, scope: 'docs:read web:search', audience: [] }, new Attempt('cli.test')),
      delegate: () =>
        delegate(b, { callerClientId: plannerId, subjectToken: s.jwt, requestedActor: readerId, scope: 'docs:read', audience: [] }, new Attempt('cli.test')),
      introspect: () => introspect(b, s.jwt),
    };
    const out: Record<string, { count: number; statements: string[] }> = {};
    for (const [name, f] of Object.entries(decisions)) {
      await f();
      out[name] = await countQueries(b, f);
    }
    return out;
  } finally {
    await b.live.stop();
  }
}
