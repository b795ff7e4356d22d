import type { Broker } from '../../src/broker.ts';
import { agents } from '../../src/store/agents.ts';
import { appendAudit } from '../../src/audit/log.ts';
import { signAccessToken } from '../../src/tokens/mint.ts';
import { startSession } from '../../src/tokens/session-start.ts';
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
  await startSession(b, { clientId: plannerId, scope: 'docs:read web:search', audience: [] });
  b.db.off('query', count);

  const steps: RateResult[] = [];
  const both = async (name: string, op: () => Promise<unknown>) => {
    steps.push(await rate(`${name} (1 in flight)`, op, seconds, 1));
    steps.push(await rate(`${name} (20 in flight)`, op, seconds, 20));
  };
  // The driver alone: one statement on the raw node-sqlite3 connection knex holds (no knex, no pool).
  const conn = (await b.db.client.acquireConnection()) as { get(sql: string, cb: (e: Error | null) => void): void };
  try {
    await both('raw sqlite3 SELECT 1 (driver round trip only)', () => new Promise<void>((res, rej) => conn.get('SELECT 1', (e) => (e ? rej(e) : res()))));
  } finally {
    await b.db.client.releaseConnection(conn);
  }
  await both('knex SELECT 1', () => b.db.raw('SELECT 1'));
  await both('HMAC client secret check', async () => hashSecret(b.secretHashKey, 'a'.repeat(43)));
  await both('signAccessToken (jose EdDSA)', () => signAccessToken(b.keys, claims));
  await both('agents.get (one SELECT)', () => agents.get(b.db, plannerId));
  await both('empty transaction (BEGIN/COMMIT)', () => b.db.transaction(async () => {}));
  await both('appendAudit in its own transaction', () => b.db.transaction((tx) => appendAudit(tx, { at: Date.now(), event: 'bench', decision: 'info', params: { scope: 'docs:read web:search', exp: 1, depth: 0 } })));
  await both('startSession (whole decision, no HTTP)', () => startSession(b, { clientId: plannerId, scope: 'docs:read web:search', audience: [] }));
  return { queriesPerSessionStart: queries, steps };
}

export function printBreakdown(d: Breakdown): void {
  console.log(`\nsession start in-process, step by step (${d.queriesPerSessionStart} SQL statements per startSession on the single SQLite connection):`);
  for (const s of d.steps) console.log(`  ${s.name.padEnd(56)} ${Math.round(s.opsPerSec).toString().padStart(7)}/s  ${s.usPerOp.toFixed(0).padStart(6)} µs/op wall`);
}
