import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Db, openDb, migrate, isPostgres, num } from '../src/store/db.ts';
import { migrationSource } from '../migrations/index.ts';
import { agents, type Agent } from '../src/store/agents.ts';
import { sessions, type Session } from '../src/store/sessions.ts';
import { tokens, type TokenRecord } from '../src/store/tokens.ts';
import { revocations } from '../src/store/revocations.ts';
import { replayGuard } from '../src/store/replay.ts';
import { auditRows } from '../src/store/audit.ts';
import { credentials } from '../src/store/credentials.ts';
import { iamDenies } from '../src/store/iam-denies.ts';
import { IssuanceWriter } from '../src/store/issuance-writer.ts';
import { CordonError } from '../src/errors.ts';
import { appendAudit, GENESIS_HASH } from '../src/store/audit-chain.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { freshPgDatabase } from './helpers/pg.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

/**
 * A throw-away database per run. PostgreSQL is always there (here and on CI): if it does not
 * answer, these suites fail — they never skip.
 */
interface Backend {
  name: string;
  create(): Promise<{ url: string; drop: () => Promise<void> }>;
}

const sqlite: Backend = {
  name: 'sqlite',
  async create() {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-store-'));
    return { url: `sqlite://${join(dir, 'store.sqlite')}`, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  },
};

const postgres: Backend = { name: 'postgres', create: freshPgDatabase };

const T0 = Date.UTC(2026, 0, 1);
const TABLES = ['agents', 'sessions', 'tokens', 'revocations', 'audit', 'signing_keys', 'bootstrap_tokens', 'replay_guard', 'credentials', 'iam_denies'];

const agentRow = (id: string, over: Partial<Agent> = {}): Agent => ({
  id,
  name: `name-${id}`,
  policy: 'doc-reader',
  authMethod: 'client_secret_basic',
  secretHash: 'ab'.repeat(32),
  jwks: null,
  status: 'active',
  createdAt: T0,
  updatedAt: T0,
  ...over,
});
const sessionRow = (sid: string, agentId: string, over: Partial<Session> = {}): Session => ({
  sid,
  agentId,
  task: 'T-1',
  scope: 'docs:read',
  audience: ['https://a.example'],
  origin: 'client_credentials',
  subject: agentId,
  createdAt: T0,
  expiresAt: T0 + 3600_000,
  revokedAt: null,
  revokeReason: null,
  sweptAt: null,
  ...over,
});
const tokenRow = (jti: string, sid: string, clientId: string, over: Partial<TokenRecord> = {}): TokenRecord => ({
  jti,
  sid,
  clientId,
  parentJti: null,
  scope: 'docs:read',
  audience: ['https://a.example'],
  depth: 0,
  act: null,
  cnfJkt: null,
  kid: 'kid-1',
  issuedAt: T0,
  expiresAt: T0 + 600_000,
  revokedAt: null,
  ...over,
});

for (const backend of [sqlite, postgres]) {
  describe(`store on ${backend.name}`, function () {
    this.timeout(60_000);
    let db: Db;
    let drop: () => Promise<void>;
    let url: string;

    before(async () => {
      const created = await backend.create();
      drop = created.drop;
      url = created.url;
      db = openDb(created.url);
      await migrate(db);
    });
    after(async () => {
      await db?.destroy();
      await drop?.();
    });

    describe('migrations', () => {
      it('create every table, on the expected dialect', async () => {
        assert.equal(isPostgres(db), backend.name === 'postgres');
        for (const table of TABLES) assert.ok(await db.schema.hasTable(table), `table ${table} is missing`);
      });

      it('are idempotent: running them again changes nothing', async () => {
        const [, pending] = (await db.migrate.list({ migrationSource })) as [unknown[], unknown[]];
        assert.equal(pending.length, 0);
        await migrate(db);
        const [done] = (await db.migrate.list({ migrationSource })) as [Array<{ name: string } | string>, unknown[]];
        assert.equal(done.length, (await migrationSource.getMigrations([])).length);
      });

      it('several processes migrating a fresh database at once: one applies them, the others find nothing to do, and knex keeps one lock row', async () => {
        for (let round = 0; round < 3; round++) {
          const fresh = await backend.create();
          const racers = [openDb(fresh.url), openDb(fresh.url), openDb(fresh.url)];
          try {
            const applied = await Promise.all(racers.map((d) => migrate(d)));
            const all = (await migrationSource.getMigrations([])).length;
            assert.deepEqual(applied.map((a) => a.length).sort(), [0, 0, all], `round ${round}`);
            assert.equal((await racers[0]('knex_migrations').count({ n: '*' }))[0].n, isPostgres(racers[0]) ? String(all) : all);
            assert.deepEqual(await racers[0]('knex_migrations_lock').select('is_locked'), [{ is_locked: 0 }]);
          } finally {
            for (const d of racers) await d.destroy();
            await fresh.drop();
          }
        }
      });

      it('repair a database an earlier race left with two knex lock rows (knex would refuse to migrate it again)', async () => {
        const fresh = await backend.create();
        const d = openDb(fresh.url);
        try {
          await migrate(d);
          await d('knex_migrations_lock').insert({ is_locked: 0 });
          await assert.rejects(d.migrate.latest({ migrationSource }), /already locked/, 'what knex alone does with two rows');
          assert.deepEqual(await migrate(d), []);
          assert.equal((await d('knex_migrations_lock').select('*')).length, 1);
        } finally {
          await d.destroy();
          await fresh.drop();
        }
      });

      it('roll back cleanly and apply again', async () => {
        await db.migrate.rollback({ migrationSource }, true);
        for (const table of TABLES) assert.equal(await db.schema.hasTable(table), false, `${table} survived rollback`);
        await migrate(db);
        for (const table of TABLES) assert.ok(await db.schema.hasTable(table), `${table} missing after re-apply`);
      });

      it('store epoch-millisecond times far beyond 32 bits and read them back as numbers', async () => {
        const far = Date.UTC(2200, 0, 1);
        await agents.insert(db, agentRow('agt_far', { createdAt: far, updatedAt: far }));
        const a = await agents.get(db, 'agt_far');
        assert.equal(a!.createdAt, far);
        assert.equal(typeof a!.createdAt, 'number');
        await db('agents').where({ id: 'agt_far' }).del();
      });

      it('enforce foreign keys (a session needs its agent, a token its session)', async () => {
        await assert.rejects(sessions.insert(db, sessionRow('ses_orphan', 'agt_missing')));
        await assert.rejects(tokens.insert(db, tokenRow('jti_orphan', 'ses_missing', 'agt_missing')));
      });
    });

    describe('issuance writer (group commit)', () => {
      const pendingRow = (id: string, sid: string, jti: string) => ({
        id,
        sid,
        jti,
        agentId: 'agt_gc',
        name: 'vault-token',
        provider: 'vault',
        createdAt: T0,
        expiresAt: T0 + 600_000,
      });
      // Its own database: the other suites here count what they wrote.
      let db: Db;
      let dropOwn: () => Promise<void>;
      before(async () => {
        const created = await backend.create();
        dropOwn = created.drop;
        db = openDb(created.url);
        await migrate(db);
        await agents.insert(db, agentRow('agt_gc'));
        await sessions.insert(db, sessionRow('ses_gc', 'agt_gc'));
        await sessions.insert(db, sessionRow('ses_gc_dead', 'agt_gc', { revokedAt: T0 + 1 }));
        await tokens.insert(db, tokenRow('jti_gc', 'ses_gc', 'agt_gc'));
        await tokens.insert(db, tokenRow('jti_gc_dead', 'ses_gc_dead', 'agt_gc'));
      });

      /** A token job whose precheck holds its batch open until `release()`: whatever is queued meanwhile shares the next batch. */
      const blocker = (w: IssuanceWriter, jti: string) => {
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        const done = w.write({ token: tokenRow(jti, 'ses_gc', 'agt_gc'), audit: { at: T0, event: 'token.issue', decision: 'allow' }, precheck: () => gate });
        return { done, release };
      };
      const begins = (d: Db) => {
        let n = 0;
        const on = (q: { sql: string }) => void (/^BEGIN/i.test(q.sql.trim()) && n++);
        d.on('query', on);
        return { count: () => n, stop: () => void d.off('query', on) };
      };
      const audit = (n: string) => (live: boolean) => ({
        at: T0 + 1000,
        event: 'credential.issue' as const,
        decision: live ? ('allow' as const) : ('info' as const),
        params: { n },
      });

      it('commits concurrent intents, tokens and credential records in one shared transaction, each with its own outcome and audit row', async () => {
        const w = new IssuanceWriter(db, () => T0 + 1000);
        const before = await auditRows.head(db);
        await credentials.insertPending(db, pendingRow('crd_gc_claimed', 'ses_gc', 'jti_gc'));
        await db('credentials').where({ id: 'crd_gc_claimed' }).update({ state: 'failed' }); // taken by orphan recovery
        const b1 = blocker(w, 'jti_gc_block1');
        const t = begins(db);
        try {
          const intents = [1, 2].map((i) => w.insertCredentialIntent(pendingRow(`crd_gc_${i}`, 'ses_gc', 'jti_gc')));
          const dead = w.insertCredentialIntent(pendingRow('crd_gc_dead', 'ses_gc_dead', 'jti_gc_dead'));
          const token = w.write({
            session: sessionRow('ses_gc_new', 'agt_gc'),
            token: tokenRow('jti_gc_new', 'ses_gc_new', 'agt_gc'),
            audit: { at: T0, event: 'token.issue', decision: 'allow' },
          });
          const refused = w.write({
            token: tokenRow('jti_gc_refused', 'ses_gc', 'agt_gc'),
            audit: { at: T0, event: 'token.issue', decision: 'allow' },
            precheck: async () => {
              throw new CordonError('invalid_grant', 'refused by its precheck');
            },
          });
          const records = [
            w.recordCredential({ credentialId: 'crd_gc_1', jti: 'jti_gc', handle: { accessor: 'a1' }, expiresAt: T0 + 300_000, audit: audit('1') }),
            w.recordCredential({ credentialId: 'crd_gc_claimed', jti: 'jti_gc', handle: { accessor: 'a2' }, expiresAt: T0 + 300_000, audit: audit('claimed') }),
            w.recordCredential({ credentialId: 'crd_gc_dead', jti: 'jti_gc_dead', handle: { accessor: 'a3' }, expiresAt: T0 + 300_000, audit: audit('dead') }),
          ];
          b1.release();
          await b1.done;
          await Promise.all([...intents, dead, token]);
          await assert.rejects(refused, /refused by its precheck/);
          assert.deepEqual(await Promise.all(records), ['issued', 'claimed', 'token_revoked']);
          assert.equal(t.count(), 2, 'the blocker’s transaction, then one for everything queued behind it');
        } finally {
          t.stop();
        }
        assert.equal((await credentials.get(db, 'crd_gc_1'))!.state, 'issued');
        assert.deepEqual((await credentials.get(db, 'crd_gc_1'))!.handle, { accessor: 'a1' });
        assert.equal((await credentials.get(db, 'crd_gc_2'))!.state, 'pending');
        assert.equal((await credentials.get(db, 'crd_gc_claimed'))!.state, 'failed', 'a claimed intent is left to recovery');
        assert.equal((await credentials.get(db, 'crd_gc_dead'))!.state, 'issued', 'recorded: it exists at the backend (the caller revokes it)');
        assert.ok(await tokens.get(db, 'jti_gc_new'));
        assert.equal(await tokens.get(db, 'jti_gc_refused'), undefined);
        const rows = await db('audit')
          .where('seq', '>', before?.seq ?? 0)
          .orderBy('seq');
        assert.deepEqual(
          rows.map((r) => [r.event, r.decision, JSON.parse(r.params).n ?? null]),
          [
            ['token.issue', 'allow', null],
            ['token.issue', 'allow', null],
            ['credential.issue', 'allow', '1'],
            ['credential.issue', 'info', 'dead'],
          ],
        );
        assert.equal((await verifyAudit(db)).ok, true);
      });

      it('a record whose earlier try committed after all (the reply was lost) is reported issued, without a second audit row', async () => {
        const w = new IssuanceWriter(db, () => T0 + 1000);
        await credentials.insertPending(db, pendingRow('crd_gc_landed', 'ses_gc', 'jti_gc'));
        await credentials.markIssued(db, 'crd_gc_landed', { handle: { accessor: 'a9' }, expiresAt: T0 + 300_000 });
        const before = await auditRows.head(db);
        assert.equal(
          await w.recordCredential({
            credentialId: 'crd_gc_landed',
            jti: 'jti_gc',
            handle: { accessor: 'a9' },
            expiresAt: T0 + 300_000,
            audit: audit('again'),
          }),
          'issued',
        );
        assert.deepEqual(await auditRows.head(db), before);
        // Not ours after all: another handle, or issued and since revoked (a retried revocation ends that way).
        assert.equal(
          await w.recordCredential({ credentialId: 'crd_gc_landed', jti: 'jti_gc', handle: { accessor: 'other' }, expiresAt: T0 + 300_000, audit: audit('x') }),
          'claimed',
        );
        await db('credentials')
          .where({ id: 'crd_gc_landed' })
          .update({ revoked_at: T0 + 2000 });
        assert.equal(
          await w.recordCredential({ credentialId: 'crd_gc_landed', jti: 'jti_gc', handle: { accessor: 'a9' }, expiresAt: T0 + 300_000, audit: audit('y') }),
          'claimed',
        );
        assert.deepEqual(await auditRows.head(db), before);
      });

      it('a failing record in a shared batch fails alone: the others are written', async () => {
        const w = new IssuanceWriter(db, () => T0 + 1000);
        await credentials.insertPending(db, pendingRow('crd_gc_a', 'ses_gc', 'jti_gc'));
        await credentials.insertPending(db, pendingRow('crd_gc_b', 'ses_gc', 'jti_gc'));
        const b1 = blocker(w, 'jti_gc_block2');
        const duplicate = w.insertCredentialIntent(pendingRow('crd_gc_a', 'ses_gc', 'jti_gc'));
        const fresh = w.insertCredentialIntent(pendingRow('crd_gc_3', 'ses_gc', 'jti_gc'));
        const checkpoint = w.checkpointCredential('crd_gc_b', { accessor: 'p2' });
        b1.release();
        await b1.done;
        await assert.rejects(duplicate);
        await fresh;
        assert.equal(await checkpoint, true);
        assert.equal((await credentials.get(db, 'crd_gc_3'))!.state, 'pending');
        assert.deepEqual((await credentials.get(db, 'crd_gc_b'))!.handle, { accessor: 'p2' });
        assert.equal((await credentials.get(db, 'crd_gc_a'))!.handle, null, 'the duplicate changed nothing');
      });
      after(async () => {
        await db?.destroy();
        await dropOwn?.();
      });
    });

    describe('IAM deny entries', () => {
      it('rebuilds of one role are serialised, in this process and (PostgreSQL) across replicas, each seeing the entries committed before it', async () => {
        const role = 'arn:aws:iam::123456789012:role/serialised';
        const other = openDb(url); // a second replica's pool
        try {
          const spans: Array<[string, number, number, number]> = [];
          const rebuild = (q: Db, name: string, insertFirst: boolean) =>
            (async () => {
              if (insertFirst)
                await iamDenies.insert(q, {
                  id: `iamd_${name}`,
                  roleArn: role,
                  policyName: 'cordon-revocations',
                  sid: 'ses_x',
                  kind: 'session',
                  subject: name,
                  revokedAt: T0,
                  createdAt: T0,
                  removeAfter: T0 + 1,
                });
              return iamDenies.withRole(q, role, async (_tx, entries) => {
                const start = Date.now();
                await new Promise((r) => setTimeout(r, 80)); // the IAM call
                spans.push([name, start, Date.now(), entries.length]);
              });
            })();
          await Promise.all([rebuild(db, 'a', true), rebuild(isPostgres(db) ? other : db, 'b', true), rebuild(db, 'c', false)]);
          spans.sort((x, y) => x[1] - y[1]);
          for (let i = 1; i < spans.length; i++) assert.ok(spans[i][1] >= spans[i - 1][2], `rebuilds overlapped: ${JSON.stringify(spans)}`);
          assert.equal(spans.at(-1)![3], 2, 'the last rebuild saw every committed entry');
          assert.deepEqual(await iamDenies.rolesWithEntries(db), [role]);
          assert.equal(await iamDenies.markRemovedMany(db, ['iamd_a', 'iamd_b'], T0 + 2), 2);
          assert.deepEqual(await iamDenies.activeForRole(db, role), []);
        } finally {
          await other.destroy();
        }
      });
    });

    describe('agents', () => {
      it('insert, get, byName, list, listByPolicy', async () => {
        await agents.insert(db, agentRow('agt_a1', { name: 'alpha', policy: 'doc-reader' }));
        await agents.insert(
          db,
          agentRow('agt_a2', {
            name: 'beta',
            policy: 'research-planner',
            authMethod: 'private_key_jwt',
            secretHash: null,
            jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'abc' }] },
            createdAt: T0 + 1,
          }),
        );
        const a1 = await agents.get(db, 'agt_a1');
        assert.deepEqual(a1, agentRow('agt_a1', { name: 'alpha', policy: 'doc-reader' }));
        const a2 = await agents.byName(db, 'beta');
        assert.equal(a2!.id, 'agt_a2');
        assert.deepEqual(a2!.jwks, { keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'abc' }] });
        assert.equal(a2!.secretHash, null);
        assert.equal(await agents.get(db, 'agt_none'), undefined);
        assert.equal(await agents.byName(db, 'nobody'), undefined);
        assert.deepEqual(
          (await agents.list(db)).map((a) => a.id),
          ['agt_a1', 'agt_a2'],
        );
        assert.deepEqual(
          (await agents.listByPolicy(db, 'research-planner')).map((a) => a.id),
          ['agt_a2'],
        );
      });

      it('names are unique', async () => {
        await assert.rejects(agents.insert(db, agentRow('agt_a3', { name: 'alpha' })));
        assert.equal(await agents.get(db, 'agt_a3'), undefined);
      });

      it('setStatus and setSecret', async () => {
        await agents.setStatus(db, 'agt_a1', 'disabled', T0 + 5);
        await agents.setSecret(db, 'agt_a1', 'cd'.repeat(32), T0 + 6);
        const a = await agents.get(db, 'agt_a1');
        assert.equal(a!.status, 'disabled');
        assert.equal(a!.secretHash, 'cd'.repeat(32));
        assert.equal(a!.updatedAt, T0 + 6);
        assert.equal((await agents.get(db, 'agt_a2'))!.status, 'active', 'other rows untouched');
      });
    });

    describe('sessions', () => {
      before(async () => {
        await agents.insert(db, agentRow('agt_s1', { name: 's1' }));
        await agents.insert(db, agentRow('agt_s2', { name: 's2' }));
      });

      it('insert and get round-trip every field', async () => {
        const s = sessionRow('ses_1', 'agt_s1', { task: null, audience: ['x', 'y'], origin: 'bootstrap', subject: 'user:42' });
        await sessions.insert(db, s);
        assert.deepEqual(await sessions.get(db, 'ses_1'), s);
        assert.equal(await sessions.get(db, 'ses_none'), undefined);
      });

      it('list filters by agent and liveness', async () => {
        await sessions.insert(db, sessionRow('ses_2', 'agt_s1', { createdAt: T0 + 10, expiresAt: T0 + 100 }));
        await sessions.insert(db, sessionRow('ses_3', 'agt_s2', { createdAt: T0 + 20 }));
        assert.deepEqual((await sessions.list(db, { agentId: 'agt_s1' })).map((s) => s.sid).sort(), ['ses_1', 'ses_2']);
        assert.deepEqual((await sessions.list(db, { liveAt: T0 + 200 })).map((s) => s.sid).sort(), ['ses_1', 'ses_3']);
        assert.deepEqual(
          (await sessions.list(db, { limit: 1 })).map((s) => s.sid),
          ['ses_3'],
          'newest first',
        );
      });

      it('revoke is once only and shows in liveness queries', async () => {
        assert.equal(await sessions.revoke(db, 'ses_1', T0 + 50, 'test'), true);
        assert.equal(await sessions.revoke(db, 'ses_1', T0 + 60, 'again'), false);
        const s = await sessions.get(db, 'ses_1');
        assert.equal(s!.revokedAt, T0 + 50);
        assert.equal(s!.revokeReason, 'test');
        assert.deepEqual(await sessions.liveSidsOfAgent(db, 'agt_s1', T0 + 60), [{ sid: 'ses_2', expiresAt: T0 + 100 }]);
        assert.deepEqual(await sessions.liveSidsOfAgent(db, 'agt_s1', T0 + 100), [], 'expiry is exclusive: at expires_at it is over');
        assert.equal(await sessions.revoke(db, 'ses_none', T0, 'x'), false);
      });

      it('countLive, endedUnswept, markSwept, overCap', async () => {
        assert.deepEqual(
          await sessions.countLive(db, T0 + 60),
          [
            { agentId: 'agt_s1', count: 1 },
            { agentId: 'agt_s2', count: 1 },
          ].sort((a, b) => a.agentId.localeCompare(b.agentId)),
        );
        const ended = (await sessions.endedUnswept(db, T0 + 200)).map((s) => s.sid).sort();
        assert.deepEqual(ended, ['ses_1', 'ses_2']);
        assert.equal(await sessions.markSwept(db, 'ses_1', T0 + 300), true);
        assert.equal(await sessions.markSwept(db, 'ses_1', T0 + 301), false);
        assert.deepEqual(
          (await sessions.endedUnswept(db, T0 + 200)).map((s) => s.sid),
          ['ses_2'],
        );
        assert.deepEqual(
          (await sessions.overCap(db, () => 3600_000)).map((s) => s.sid),
          [],
        );
        assert.deepEqual(
          (await sessions.overCap(db, (id) => (id === 'agt_s2' ? 60_000 : undefined))).map((s) => s.sid),
          ['ses_3'],
        );
      });
    });

    describe('tokens', () => {
      before(async () => {
        await agents.insert(db, agentRow('agt_t1', { name: 't1' }));
        await sessions.insert(db, sessionRow('ses_t1', 'agt_t1'));
        await sessions.insert(db, sessionRow('ses_t2', 'agt_t1'));
      });

      it('insert and get round-trip every field', async () => {
        const t = tokenRow('jti_root', 'ses_t1', 'agt_t1', { act: { sub: 'agt_t1' }, cnfJkt: 'thumb', audience: ['a', 'b'] });
        await tokens.insert(db, t);
        assert.deepEqual(await tokens.get(db, 'jti_root'), t);
        assert.equal(await tokens.get(db, 'jti_none'), undefined);
      });

      it('subtree follows every level of delegation, and nothing else', async () => {
        // root → c1, c2; c1 → g1; g1 → gg1; an unrelated token in the same session and one in another.
        await db.transaction(async (tx) => {
          await tokens.insert(tx, tokenRow('jti_c1', 'ses_t1', 'agt_t1', { parentJti: 'jti_root', depth: 1 }));
          await tokens.insert(tx, tokenRow('jti_c2', 'ses_t1', 'agt_t1', { parentJti: 'jti_root', depth: 1 }));
          await tokens.insert(tx, tokenRow('jti_g1', 'ses_t1', 'agt_t1', { parentJti: 'jti_c1', depth: 2 }));
          await tokens.insert(tx, tokenRow('jti_gg1', 'ses_t1', 'agt_t1', { parentJti: 'jti_g1', depth: 3 }));
          await tokens.insert(tx, tokenRow('jti_other', 'ses_t1', 'agt_t1'));
          await tokens.insert(tx, tokenRow('jti_elsewhere', 'ses_t2', 'agt_t1'));
        });
        const tree = (await tokens.subtree(db, 'jti_root')).map((t) => t.jti);
        assert.equal(tree[0], 'jti_root', 'root first');
        assert.deepEqual([...tree].sort(), ['jti_c1', 'jti_c2', 'jti_g1', 'jti_gg1', 'jti_root']);
        assert.ok(tree.indexOf('jti_c1') < tree.indexOf('jti_g1') && tree.indexOf('jti_g1') < tree.indexOf('jti_gg1'), 'breadth first');
        assert.deepEqual(
          (await tokens.subtree(db, 'jti_g1')).map((t) => t.jti),
          ['jti_g1', 'jti_gg1'],
        );
        assert.deepEqual(await tokens.subtree(db, 'jti_none'), []);
        assert.deepEqual(
          (await tokens.bySession(db, 'ses_t2')).map((t) => t.jti),
          ['jti_elsewhere'],
        );
      });

      it('subtree crosses the IN-list chunk size (more than 500 tokens on one level)', async () => {
        await db.transaction(async (tx) => {
          await tokens.insert(tx, tokenRow('jti_wide', 'ses_t2', 'agt_t1'));
          const rows = Array.from({ length: 620 }, (_, i) => ({
            jti: `jti_w${i}`,
            sid: 'ses_t2',
            client_id: 'agt_t1',
            parent_jti: 'jti_wide',
            scope: 's',
            audience: '[]',
            depth: 1,
            act: null,
            cnf_jkt: null,
            kid: 'k',
            issued_at: T0,
            expires_at: T0 + 1000,
            revoked_at: null,
          }));
          for (let i = 0; i < rows.length; i += 50) await tx('tokens').insert(rows.slice(i, i + 50));
          // A grandchild under the last child: found only if the second chunk of the frontier is queried.
          await tokens.insert(tx, tokenRow('jti_deep', 'ses_t2', 'agt_t1', { parentJti: 'jti_w619', depth: 2 }));
        });
        const tree = await tokens.subtree(db, 'jti_wide');
        assert.equal(tree.length, 1 + 620 + 1);
        assert.equal(tree[tree.length - 1].jti, 'jti_deep');
        const revoked = await tokens.revokeMany(
          db,
          tree.map((t) => t.jti),
          T0 + 1,
        );
        assert.equal(revoked.length, 622);
      });

      it('revokeMany returns only what was live; revokeSession; countLive; maxExpiryByKid', async () => {
        const first = await tokens.revokeMany(db, ['jti_c1', 'jti_g1', 'jti_none'], T0 + 100);
        assert.deepEqual(first.sort(), ['jti_c1', 'jti_g1']);
        const again = await tokens.revokeMany(db, ['jti_c1', 'jti_gg1'], T0 + 200);
        assert.deepEqual(again, ['jti_gg1']);
        assert.equal((await tokens.get(db, 'jti_c1'))!.revokedAt, T0 + 100, 'the first revocation time stands');
        assert.deepEqual(await tokens.revokeMany(db, [], T0), []);

        const live = await tokens.countLive(db, T0 + 300);
        assert.deepEqual(live, [{ clientId: 'agt_t1', count: 4 }], 'root, c2, other, elsewhere');
        assert.equal(await tokens.revokeSession(db, 'ses_t1', T0 + 400), 3);
        assert.equal(await tokens.revokeSession(db, 'ses_t1', T0 + 500), 0);
        assert.deepEqual(await tokens.countLive(db, T0 + 600), [{ clientId: 'agt_t1', count: 1 }]);
        assert.deepEqual(await tokens.countLive(db, T0 + 600_000), [], 'expired tokens are not live');

        await tokens.insert(db, tokenRow('jti_k2', 'ses_t2', 'agt_t1', { kid: 'kid-2', expiresAt: T0 + 999_999 }));
        assert.equal(await tokens.maxExpiryByKid(db, 'kid-2'), T0 + 999_999);
        assert.equal(await tokens.maxExpiryByKid(db, 'kid-1'), T0 + 600_000);
        assert.equal(await tokens.maxExpiryByKid(db, 'kid-none'), 0);
      });
    });

    describe('revocations', () => {
      it('add (batched), since with cursor and limit, lastSeq', async () => {
        assert.equal(await revocations.lastSeq(db), 0);
        assert.deepEqual(await revocations.since(db, 0), []);
        const entries = Array.from({ length: 450 }, (_, i) => ({
          // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- needed: without it the literal widens to string
          kind: (i % 3 === 0 ? 'sid' : 'jti') as 'sid' | 'jti',
          value: `v${i}`,
          expiresAt: T0 + i,
          revokedAt: T0,
        }));
        await revocations.add(db, entries);
        await revocations.add(db, []);
        const last = await revocations.lastSeq(db);
        const all = await revocations.since(db, 0, 10_000);
        assert.equal(all.length, 450);
        assert.equal(all[all.length - 1].seq, last);
        assert.deepEqual(
          all.map((r) => r.value),
          entries.map((e) => e.value),
          'in insertion order',
        );
        for (let i = 1; i < all.length; i++) assert.ok(all[i].seq > all[i - 1].seq);
        assert.equal(typeof all[0].expiresAt, 'number');
        const page = await revocations.since(db, all[99].seq, 50);
        assert.equal(page.length, 50);
        assert.equal(page[0].value, 'v100');
        assert.deepEqual(await revocations.since(db, last), []);
      });
    });

    describe('replay guard', () => {
      it('first claim wins, a replay loses, an expired key can be claimed again, prune removes it', async () => {
        assert.equal(await replayGuard.claim(db, 'k1', T0 + 1000, T0), true);
        assert.equal(await replayGuard.claim(db, 'k1', T0 + 1000, T0 + 1), false);
        assert.equal(await replayGuard.seen(db, 'k1', T0 + 999), true);
        assert.equal(await replayGuard.seen(db, 'k1', T0 + 1000), false);
        assert.equal(await replayGuard.claim(db, 'k1', T0 + 5000, T0 + 1000), true, 'expired entries are reclaimed');
        assert.equal(await replayGuard.claim(db, 'k2', T0 + 10, T0), true);
        assert.equal(await replayGuard.prune(db, T0 + 10), 1);
        assert.equal(await replayGuard.seen(db, 'k1', T0 + 1001), true);
      });

      it('concurrent claims of one key: exactly one wins', async () => {
        const results = await Promise.all(Array.from({ length: 10 }, () => replayGuard.claim(db, 'race', T0 + 1000, T0)));
        assert.equal(results.filter(Boolean).length, 1);
      });

      it('a value already past its life cannot be claimed (else every later use would reclaim it), also inside a transaction', async () => {
        assert.equal(await replayGuard.claim(db, 'late', T0, T0), false);
        assert.equal(await replayGuard.claim(db, 'late', T0, T0 + 5), false);
        assert.equal(await replayGuard.seen(db, 'late', T0 - 1), false, 'nothing was written');
        const inTx = await db.transaction(async (tx) => [
          await replayGuard.claim(tx, 'tx-k', T0 + 1000, T0),
          await replayGuard.claim(tx, 'tx-k', T0 + 1000, T0),
          await tx('replay_guard').where({ key: 'tx-k' }).count({ n: '*' }),
        ]);
        assert.deepEqual(inTx.slice(0, 2), [true, false], 'a conflict inside a transaction is a refusal, not an aborted transaction');
      });
    });

    describe('audit', () => {
      it('appends a hash chain that verifies, across pages', async () => {
        for (let i = 0; i < 12; i++) {
          await db.transaction((tx) =>
            appendAudit(tx, {
              at: T0 + i,
              event: i % 2 ? 'deny' : 'token.issue',
              decision: i % 2 ? 'deny' : 'allow',
              agentId: 'agt_x',
              sid: i < 3 ? 'ses_audit' : null,
              jti: `j${i}`,
              chain: ['agt_x'],
              reason: i % 2 ? 'invalid_scope: no' : null,
              params: { i, nested: { b: 1, a: [1, 'x'] }, client_secret: 'must-not-appear' },
            }),
          );
        }
        const first = (await auditRows.page(db, 0, 1))[0];
        assert.equal(first.seq, 1);
        assert.equal(first.prevHash, GENESIS_HASH);
        assert.deepEqual(first.params, { i: 0, nested: { b: 1, a: [1, 'x'] }, client_secret: '[redacted]' });
        assert.deepEqual(first.chain, ['agt_x']);
        for (const size of [1, 5, 2000]) {
          const v = await verifyAudit(db, size);
          assert.deepEqual(v.ok && v.rows, 12, `page size ${size}: ${JSON.stringify(v)}`);
        }
        assert.deepEqual(
          (await auditRows.tail(db, 3)).map((r) => r.seq),
          [10, 11, 12],
        );
        assert.deepEqual(
          (await auditRows.bySession(db, 'ses_audit')).map((r) => r.seq),
          [1, 2, 3],
        );
        assert.equal((await auditRows.head(db))!.seq, 12);
        const raw = JSON.stringify(await db('audit').select('*'));
        assert.ok(!raw.includes('must-not-appear'), 'secret-named params are redacted');
      });

      it('names a changed row, on page boundaries too', async () => {
        const row = await db('audit').where({ seq: 6 }).first();
        await db('audit')
          .where({ seq: 6 })
          .update({ params: row.params.replace('"i":5', '"i":50') });
        for (const size of [1, 5, 2000]) {
          const v = await verifyAudit(db, size);
          assert.equal(!v.ok && v.brokenSeq, 6, `page size ${size}: ${JSON.stringify(v)}`);
        }
        await db('audit').where({ seq: 6 }).update({ params: row.params });
        assert.equal((await verifyAudit(db)).ok, true);
      });

      it('a row that fails its own transaction leaves no gap', async () => {
        await assert.rejects(
          db.transaction(async (tx) => {
            await appendAudit(tx, { at: T0, event: 'token.issue', decision: 'allow' });
            throw new Error('the change failed');
          }),
        );
        const row = await db.transaction((tx) => appendAudit(tx, { at: T0, event: 'token.issue', decision: 'allow' }));
        assert.equal(row.seq, 13, 'the failed append left no gap');
        assert.equal((await verifyAudit(db)).ok, true);
      });

      it('keeps a refusal whose reason or params quote NUL and control characters (PostgreSQL text cannot hold NUL)', async () => {
        const row = await db.transaction((tx) =>
          appendAudit(tx, {
            at: T0,
            event: 'deny',
            decision: 'deny',
            agentId: 'agt_x',
            reason: 'invalid_request: unsupported subject_token_type \u0000\n\u001b[31m',
            params: { subject_token_type: '\u0000', task: 'a\u0000b' },
          }),
        );
        const stored = (await auditRows.tail(db, 1))[0];
        assert.equal(stored.seq, row.seq);
        assert.equal(stored.reason, 'invalid_request: unsupported subject_token_type \\u0000\\u000a\\u001b[31m');
        assert.deepEqual(stored.params, { subject_token_type: '\u0000', task: 'a\u0000b' }, 'params round-trip exactly (JSON escapes them)');
        assert.equal((await verifyAudit(db)).ok, true);
      });

      it('20 concurrent transactions append a contiguous chain that verifies', async () => {
        const start = (await auditRows.head(db))!.seq;
        await agents.insert(db, agentRow('agt_conc', { name: 'conc' }));
        await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            db.transaction(async (tx) => {
              // Real work in the same transaction, before the audit row, as the broker does it.
              await sessions.insert(tx, sessionRow(`ses_conc_${i}`, 'agt_conc'));
              await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 5)));
              await appendAudit(tx, { at: T0 + i, event: 'session.open', decision: 'allow', agentId: 'agt_conc', sid: `ses_conc_${i}`, params: { i } });
            }),
          ),
        );
        const rows = await db('audit').where('seq', '>', start).orderBy('seq');
        assert.equal(rows.length, 20);
        assert.deepEqual(
          rows.map((r) => num(r.seq)),
          Array.from({ length: 20 }, (_, i) => start + 1 + i),
          'seqs are contiguous',
        );
        assert.deepEqual(new Set(rows.map((r) => r.sid)).size, 20, 'every transaction wrote its row');
        const v = await verifyAudit(db);
        assert.equal(v.ok, true, JSON.stringify(v));
      });

      if (backend.name === 'postgres') {
        it('the chain lock really serialises: without it, concurrent appends collide', async () => {
          // Control experiment: the same race with the advisory lock disabled must break, or the test above proves nothing.
          // eslint-disable-next-line @typescript-eslint/unbound-method -- put back as it was
          const original = auditRows.lockChain;
          auditRows.lockChain = async () => {};
          const results: Array<'ok' | 'failed'> = [];
          try {
            await Promise.all(
              Array.from({ length: 20 }, (_, i) =>
                db
                  .transaction(async (tx) => {
                    await tx.raw('select pg_sleep(0.01)');
                    await appendAudit(tx, { at: T0 + i, event: 'policy.load', decision: 'info', params: { i } });
                  })
                  .then(() => results.push('ok'))
                  .catch(() => results.push('failed')),
              ),
            );
          } finally {
            auditRows.lockChain = original;
          }
          assert.ok(results.includes('failed'), 'without the lock some appends should have collided on seq');
          // Clean up the rows the unlocked race did write, so the chain is whole again.
          await db('audit').where({ event: 'race' }).del();
          assert.equal((await verifyAudit(db)).ok, true);
        });
      }
    });
  });
}

describe('a whole broker on PostgreSQL', function () {
  this.timeout(60_000);
  let t: TestBroker;
  let drop: () => Promise<void>;

  before(async () => {
    const created = await freshPgDatabase();
    drop = created.drop;
    t = await startTestBroker({ databaseUrl: created.url });
  });
  after(async () => {
    await t?.close();
    await drop?.();
  });

  it('opens a session, introspects it, revokes it, and keeps an intact audit chain', async () => {
    assert.equal(isPostgres(t.b.db), true);
    const a = await t.register('pg-agent', 'support-summarizer');
    const r = await postForm(
      `${t.url}/token`,
      { grant_type: 'client_credentials', scope: 'tickets:read', task: 'on-postgres' },
      { authorization: basic(a.id, a.secret) },
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const i = await postForm(`${t.url}/introspect`, { token: r.body.access_token }, { authorization: basic(a.id, a.secret) });
    assert.equal(i.body.active, true);
    assert.equal(i.body.task, 'on-postgres');
    assert.equal(i.body.sid, r.body.sid);
    const refused = await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:write' }, { authorization: basic(a.id, a.secret) });
    assert.equal(refused.body.error, 'invalid_scope');
    const rv = await postForm(`${t.url}/revoke`, { token: r.body.access_token }, { authorization: basic(a.id, a.secret) });
    assert.equal(rv.status, 200);
    assert.deepEqual((await postForm(`${t.url}/introspect`, { token: r.body.access_token }, { authorization: basic(a.id, a.secret) })).body, { active: false });
    const feed = await fetch(`${t.url}/revocations?since=0`).then((x) => x.json());
    assert.ok(feed.revoked.some((e: { kind: string }) => e.kind === 'jti'));
    // Renewal past the reload interval on the injected clock (the keyring re-reads keys inside the issuing transaction).
    t.clock.advance(11_000);
    const again = await postForm(
      `${t.url}/token`,
      { grant_type: 'client_credentials', scope: 'tickets:read', session: r.body.sid },
      { authorization: basic(a.id, a.secret) },
    );
    assert.equal(again.status, 200, JSON.stringify(again.body));
    const v = await verifyAudit(t.b.db);
    assert.equal(v.ok, true, JSON.stringify(v));
    const events = (await t.b.db('audit').select('event').orderBy('seq')).map((x) => x.event);
    for (const e of ['key.create', 'agent.register', 'session.open', 'deny', 'revoke', 'token.issue']) assert.ok(events.includes(e), `no ${e} in ${events}`);
  });
});
