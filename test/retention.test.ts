import assert from 'node:assert/strict';
import { sweepOnce } from '../src/credentials/sweep.ts';
import { pruneRetained } from '../src/credentials/retention.ts';
import { revokeSession, revokeTokenChain } from '../src/revocation/revoke.ts';
import { issueBootstrapToken } from '../src/sessions/bootstrap.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { main } from '../src/cli/main.ts';
import type { Io } from '../src/cli/output.ts';
import { claimsOf, introspect, mustDelegate, mustSession } from './delegation.kit.ts';
import { credFixture, type CredFixture } from './credentials.kit.ts';
import { freshPgDatabase } from './helpers/pg.ts';

const MIN = 60_000;
/** The retention window these tests run with. */
const WINDOW = 10 * MIN;

/** `cordon session show SID --json` run in this process against the fixture's database (the CLI reads the environment). */
async function sessionShow(f: CredFixture, sid: string): Promise<{ code: number; out: string; err: string }> {
  const vars: Record<string, string> = {
    DATABASE_URL: f.tb.b.config.databaseUrl,
    CORDON_KEY_DIR: f.tb.b.config.keyDir,
    CORDON_AUDIT_DIR: f.tb.b.config.auditDir,
    CORDON_POLICY_DIR: f.tb.b.config.policyDir,
    CORDON_LOG_LEVEL: 'silent',
  };
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  let out = '';
  let err = '';
  const io: Io = { out: (s) => void (out += s), err: (s) => void (err += s) };
  try {
    const code = await main(['session', 'show', sid, '--json'], io);
    return { code, out, err };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const count = async (f: CredFixture, table: string, where: Record<string, string> = {}): Promise<number> =>
  Number((await f.tb.b.db(table).where(where).count({ n: '*' }).first())!.n);

for (const backend of ['sqlite', 'postgres'] as const) {
  describe(`retention (${backend}): what ended more than CORDON_RETENTION ago is deleted, never the audit log`, function () {
    this.timeout(60_000);
    let f: CredFixture;
    let drop: (() => Promise<void>) | undefined;

    beforeEach(async () => {
      let databaseUrl: string | undefined;
      if (backend === 'postgres') {
        const pg = await freshPgDatabase();
        databaseUrl = pg.url;
        drop = pg.drop;
      }
      f = await credFixture({ databaseUrl, env: { CORDON_RETENTION: '10m' } });
    });
    afterEach(async () => {
      await f?.stop();
      await drop?.();
      drop = undefined;
    });

    it('prunes whole sessions (tokens, credentials) once ended, swept and every credential final past the window; keeps trees, feed cursor and audit chain intact', async () => {
      const b = f.tb.b;
      const t0 = f.tb.clock.now();
      const owner = await f.agent('ret-owner', 'creds-owner');
      const worker = await f.agent('ret-worker', 'creds-worker');

      // A: a session with a delegation, Vault and STS (IAM-revocable) credentials; its child token is revoked, then the session.
      const rootA = await mustSession(f.tb, owner, 'work:read cred:vault-token cred:vault-db cred:s3-iam');
      const sidA = claimsOf(rootA).sid;
      const childA = await mustDelegate(f.tb, owner, rootA, worker, 'work:read cred:vault-token');
      for (const [name, tok] of [
        ['vault-token', rootA],
        ['vault-db', rootA],
        ['s3-iam', rootA],
        ['vault-token', childA],
      ] as const)
        assert.equal((await f.cred(name, tok)).status, 200, name);
      // D: a session holding an STS credential IAM cannot revoke (revoke_via_iam: false): alive at STS for 30 minutes.
      const rootD = await mustSession(f.tb, owner, 'cred:s3');
      const sidD = claimsOf(rootD).sid;
      const s3 = (await f.cred('s3', rootD)).body;
      const boot = await issueBootstrapToken(b, owner.name, { ttlSec: 60 });

      f.tb.clock.set(t0 + MIN);
      await revokeTokenChain(b, claimsOf(childA).jti, { actor: 'admin', via: 'test' });
      await revokeSession(b, sidA, { actor: 'admin', via: 'test' });
      await revokeSession(b, sidD, { actor: 'admin', via: 'test' });
      f.tb.clock.set(t0 + 2 * MIN);
      // Unknown clients' refusals are counted per address until their window ends.
      for (let i = 0; i < 25; i++) b.refusals.admit('203.0.113.9', 'invalid_client');
      let rep = await sweepOnce(b);
      assert.equal(rep.sessionsSwept, 2);
      assert.deepEqual(rep.pruned, { sessions: 0, tokens: 0, credentials: 0, revocations: 0, iamDenies: 0, bootstrapTokens: 0 }, 'nothing is old enough yet');
      assert.equal(b.refusals.tracked, 1);
      const auditBefore = await count(f, 'audit');

      // B: a live session with a delegation, started later.
      f.tb.clock.set(t0 + 5 * MIN);
      const rootB = await mustSession(f.tb, owner, 'work:read cred:vault-token');
      const sidB = claimsOf(rootB).sid;
      const childB = await mustDelegate(f.tb, owner, rootB, worker, 'work:read');
      assert.equal((await f.cred('vault-token', rootB)).status, 200);

      // Past A's end plus the window: A goes whole; D stays (its STS credential is still alive); B stays (live); the bootstrap token goes.
      f.tb.clock.set(t0 + 13 * MIN);
      rep = await sweepOnce(b);
      assert.equal(rep.pruned.sessions, 1);
      assert.equal(rep.pruned.tokens, 2);
      assert.equal(rep.pruned.credentials, 4);
      assert.equal(rep.pruned.bootstrapTokens, 1);
      assert.equal(await count(f, 'sessions', { sid: sidA }), 0);
      assert.equal(await count(f, 'tokens', { sid: sidA }), 0);
      assert.equal(await count(f, 'credentials', { sid: sidA }), 0);
      assert.equal(await count(f, 'bootstrap_tokens', { id: boot.id }), 0);
      assert.equal(await count(f, 'sessions', { sid: sidD }), 1, 'an issued credential still alive at its backend keeps its session');
      assert.equal(await count(f, 'credentials', { sid: sidD }), 1);
      assert.equal(await count(f, 'tokens', { sid: sidB }), 2);
      assert.equal(b.refusals.tracked, 0, 'the refusal window that ended was summarised and forgotten');
      assert.ok(await count(f, 'iam_denies', { sid: sidA }), 'the IAM deny stays while the credential it denies could live');
      assert.equal(rep.pruned.revocations, 0, 'feed entries stay until their subject expired FEED_GRACE_MS + the window ago');

      // What is left still reads whole; what went reads as unknown, never as live.
      const shown = await sessionShow(f, sidB);
      assert.equal(shown.code, 0, shown.err);
      const j = JSON.parse(shown.out);
      assert.equal(j.tokens, 2);
      assert.equal(j.tree[0].children[0].jti, claimsOf(childB).jti);
      const gone = await sessionShow(f, sidA);
      assert.notEqual(gone.code, 0);
      assert.match(gone.err, /no session/);
      assert.equal((await introspect(f.tb, worker, rootA)).active, false);

      // Past D's credential's end plus the window: D goes too; the feed entry of A's child token (expired at t0 + 5m) goes.
      f.tb.clock.set(Date.parse(s3.expires_at) + WINDOW + MIN);
      rep = await sweepOnce(b);
      assert.equal(rep.pruned.sessions, 1);
      assert.equal(await count(f, 'sessions', { sid: sidD }), 0);
      assert.equal(await count(f, 'revocations', { value: claimsOf(childA).jti }), 0);
      assert.equal(await count(f, 'revocations', { value: sidA }), 1, 'A lived until t0 + 1h: its entry stays');

      // Much later: everything has gone but the newest feed entry (the cursor keeps rising) and the audit log.
      f.tb.clock.set(t0 + 4 * 3600_000);
      const lastSeq = Number((await b.db('revocations').max({ m: 'seq' }).first())!.m);
      await sweepOnce(b);
      assert.equal(await count(f, 'sessions'), 0);
      assert.equal(await count(f, 'tokens'), 0);
      assert.equal(await count(f, 'credentials'), 0);
      assert.equal(await count(f, 'iam_denies'), 0, 'removed deny entries go after the window');
      assert.deepEqual(
        (await b.db('revocations').select('seq')).map((r) => Number(r.seq)),
        [lastSeq],
      );
      const audit = await verifyAudit(b.db);
      assert.ok(audit.ok, JSON.stringify(audit));
      assert.ok(audit.rows >= auditBefore, 'no audit row was deleted');
      assert.equal(await count(f, 'audit'), audit.rows);

      // Nothing to do the second time; a new revocation takes a higher seq than any a reader has seen.
      assert.deepEqual((await sweepOnce(b)).pruned, { sessions: 0, tokens: 0, credentials: 0, revocations: 0, iamDenies: 0, bootstrapTokens: 0 });
      const rootE = await mustSession(f.tb, owner, 'work:read');
      await revokeSession(b, claimsOf(rootE).sid, { actor: 'admin', via: 'test' });
      assert.ok(Number((await b.db('revocations').max({ m: 'seq' }).first())!.m) > lastSeq);
    });

    it('keeps a session that the sweeper has not finished with, or with a credential not yet final, however old', async () => {
      const b = f.tb.b;
      const t0 = f.tb.clock.now();
      const owner = await f.agent('ret-keep', 'creds-owner');
      const tok = await mustSession(f.tb, owner, 'cred:vault-db');
      const sid = claimsOf(tok).sid;
      assert.equal((await f.cred('vault-db', tok)).status, 200);
      f.tb.clock.set(t0 + 2 * 3600_000);
      // Not swept yet: its credential is still 'issued' and the lease unexpired at Vault.
      assert.equal((await pruneRetained(b)).sessions, 0);
      assert.equal(await count(f, 'sessions', { sid }), 1);
      // A pending intent (a broker died mid-issue) holds its session until orphan recovery settles it.
      await b.db('sessions').where({ sid }).update({ swept_at: f.tb.clock.now() });
      await b.db('credentials').where({ sid }).update({ state: 'pending' });
      assert.equal((await pruneRetained(b)).sessions, 0);
      assert.equal(await count(f, 'credentials', { sid }), 1);
      await b
        .db('credentials')
        .where({ sid })
        .update({ state: 'revoked', revoked_at: t0 + 3600_000 });
      const rep = await pruneRetained(b);
      assert.deepEqual([rep.sessions, rep.tokens, rep.credentials], [1, 1, 1]);
    });
  });
}
