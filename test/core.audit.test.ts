import assert from 'node:assert/strict';
import { registerAgent } from '../src/agents/registry.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

/** The hash-chained audit log: intact after real traffic, tampering named by row, and never a secret in it. */
describe('core: audit chain', () => {
  let t: TestBroker;
  let a: { id: string; secret: string };
  let b: { id: string; secret: string };
  const issued: string[] = [];
  const secrets: string[] = [];

  const token = (who: { id: string; secret: string }, form: Record<string, string>) =>
    postForm(`${t.url}/token`, { grant_type: 'client_credentials', ...form }, { authorization: basic(who.id, who.secret) });

  before(async () => {
    t = await startTestBroker();
    a = await t.register('summarizer', 'support-summarizer');
    b = await t.register('reader', 'doc-reader');
    secrets.push(a.secret, b.secret);
    // A mix of grants and refusals, through every path that writes audit rows.
    const s1 = await token(a, { scope: 'tickets:read crm.contacts:read', task: 'T-100' });
    assert.equal(s1.status, 200);
    issued.push(s1.body.access_token);
    const s2 = await token(a, { scope: 'tickets:read', session: s1.body.sid });
    assert.equal(s2.status, 200);
    issued.push(s2.body.access_token);
    // Secret in the body too (client_secret_post), so a leak from params would show.
    const s3 = await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:read', client_id: b.id, client_secret: b.secret });
    assert.equal(s3.status, 200);
    issued.push(s3.body.access_token);
    assert.equal((await token(a, { scope: 'docs:write' })).status, 400);
    assert.equal((await token(a, { scope: 'tickets:read', resource: 'https://evil.example' })).status, 400);
    assert.equal((await token(b, { scope: 'docs:read', session: s1.body.sid })).status, 400);
    // Wrong secrets: a near miss of a real secret must not be written either.
    const nearMiss = `${a.secret}Z`;
    secrets.push(nearMiss);
    assert.equal(
      (await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'tickets:read', client_id: a.id, client_secret: nearMiss })).status,
      401,
    );
    assert.equal((await token({ id: a.id, secret: nearMiss }, { scope: 'tickets:read' })).status, 401);
    // Token values sent where they could be logged: introspection, revocation, renewal parameters.
    const i = await postForm(`${t.url}/introspect`, { token: s2.body.access_token }, { authorization: basic(a.id, a.secret) });
    assert.equal(i.body.active, true);
    const r = await postForm(`${t.url}/revoke`, { token: s2.body.access_token }, { authorization: basic(a.id, a.secret) });
    assert.equal(r.status, 200);
    await revokeSession(t.b, s3.body.sid, { actor: 'test', via: 'test' });
    // A private_key_jwt registration (public keys only in the audit).
    await registerAgent(t.b, {
      name: 'pk',
      policy: 'doc-reader',
      auth: 'private_key_jwt',
      jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo' }] },
    });
  });
  after(async () => {
    await t?.close();
  });

  const rowCount = async (): Promise<number> => Number((await t.b.db('audit').count({ n: '*' }).first())?.n);

  it('verifies after a mix of grants and refusals', async () => {
    const v = await verifyAudit(t.b.db);
    assert.equal(v.ok, true, JSON.stringify(v));
    assert.equal(v.ok && v.rows, await rowCount());
    const decisions = new Set((await t.b.db('audit').select('decision')).map((r) => r.decision));
    assert.ok(decisions.has('allow') && decisions.has('deny') && decisions.has('info'), `decisions: ${[...decisions]}`);
    const events = new Set((await t.b.db('audit').select('event')).map((r) => r.event));
    for (const e of ['agent.register', 'key.create', 'session.open', 'token.issue', 'deny', 'revoke']) assert.ok(events.has(e), `no ${e} row`);
  });

  it('records token values only as their jti', async () => {
    const rows = await t.b.db('audit').whereNotNull('jti');
    assert.ok(rows.length >= 3);
    for (const r of rows) assert.match(r.jti, /^[A-Za-z0-9_-]{16,64}$/);
  });

  it('holds no client secret and no token value anywhere in any row', async () => {
    const rows = await t.b.db('audit').select('*');
    const needles: Array<[string, string]> = [];
    for (const s of secrets) needles.push(['secret', s]);
    for (const jwt of issued) {
      const [h, p, sig] = jwt.split('.');
      needles.push(['token', jwt], ['token signature', sig], ['token payload', p], ['token header+payload', `${h}.${p}`]);
    }
    for (const row of rows) {
      const text = Object.values(row)
        .map((v) => String(v))
        .join('\u0000');
      for (const [what, n] of needles) assert.ok(!text.includes(n), `audit row ${row.seq} (${row.event}) contains a ${what}`);
    }
    // Positive control: the search does find what is meant to be there (each token's jti).
    const all = rows
      .map((row) =>
        Object.values(row)
          .map((v) => String(v))
          .join('\u0000'),
      )
      .join('\n');
    for (const jwt of issued) {
      const jti = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).jti as string;
      assert.ok(all.includes(jti), `jti ${jti} is not in the audit log`);
    }
    // Nor anywhere else a secret could leak to: the agents table holds only the keyed hash.
    const agentsText = JSON.stringify(await t.b.db('agents').select('*'));
    for (const s of secrets) assert.ok(!agentsText.includes(s), 'agents table holds a plain secret');
  });

  describe('tampering', () => {
    /** Runs `tamper`, checks verifyAudit names `expectSeq`, then undoes the change. */
    async function expectBroken(tamper: () => Promise<void>, restore: () => Promise<void>, expectSeq: number, problem: RegExp): Promise<void> {
      await tamper();
      const v = await verifyAudit(t.b.db);
      assert.equal(v.ok, false, 'tampering went unnoticed');
      assert.equal(!v.ok && v.brokenSeq, expectSeq, JSON.stringify(v));
      assert.match(!v.ok ? v.problem : '', problem);
      await restore();
      const again = await verifyAudit(t.b.db);
      assert.equal(again.ok, true, `restored chain: ${JSON.stringify(again)}`);
    }

    it('a changed params field names its row', async () => {
      const n = await rowCount();
      const seq = Math.floor(n / 2);
      const row = await t.b.db('audit').where({ seq }).first();
      const changed = JSON.stringify({ ...JSON.parse(row.params), scope: 'everything:*' });
      await expectBroken(
        () => t.b.db('audit').where({ seq }).update({ params: changed }),
        () => t.b.db('audit').where({ seq }).update({ params: row.params }),
        seq,
        /altered/,
      );
    });

    it('a changed reason on a deny row names its row', async () => {
      const deny = await t.b.db('audit').where({ decision: 'deny' }).orderBy('seq').first();
      await expectBroken(
        () => t.b.db('audit').where({ seq: deny.seq }).update({ reason: 'nothing to see' }),
        () => t.b.db('audit').where({ seq: deny.seq }).update({ reason: deny.reason }),
        Number(deny.seq),
        /altered/,
      );
    });

    it('a deny turned into an allow names its row', async () => {
      const deny = await t.b.db('audit').where({ decision: 'deny' }).orderBy('seq', 'desc').first();
      await expectBroken(
        () => t.b.db('audit').where({ seq: deny.seq }).update({ decision: 'allow' }),
        () => t.b.db('audit').where({ seq: deny.seq }).update({ decision: 'deny' }),
        Number(deny.seq),
        /altered/,
      );
    });

    it('a row re-hashed after editing is caught at the next row', async () => {
      const { rowHash } = await import('../src/store/audit-chain.ts');
      const seq = 3;
      const row = await t.b.db('audit').where({ seq }).first();
      const edited = { ...row, agent_id: 'agt_someone_else' };
      const newHash = rowHash({
        seq: Number(edited.seq),
        at: Number(edited.at),
        event: edited.event,
        decision: edited.decision,
        agentId: edited.agent_id,
        sid: edited.sid ?? null,
        jti: edited.jti ?? null,
        chain: edited.chain ? JSON.parse(edited.chain) : null,
        reason: edited.reason ?? null,
        params: JSON.parse(edited.params),
        prevHash: edited.prev_hash,
      });
      await expectBroken(
        () => t.b.db('audit').where({ seq }).update({ agent_id: edited.agent_id, hash: newHash }),
        () => t.b.db('audit').where({ seq }).update({ agent_id: row.agent_id, hash: row.hash }),
        seq + 1,
        /link/,
      );
    });

    it('a deleted middle row is named', async () => {
      const n = await rowCount();
      const seq = Math.floor(n / 2) + 1;
      const row = await t.b.db('audit').where({ seq }).first();
      await expectBroken(
        () => t.b.db('audit').where({ seq }).del(),
        () => t.b.db('audit').insert(row),
        seq,
        /missing/,
      );
    });

    it('a deleted last row is not detectable from the chain alone, but the count drops (documented limit)', async () => {
      // The chain proves order and content, not length: truncation at the head needs the exported head hash.
      const n = await rowCount();
      const last = await t.b.db('audit').where({ seq: n }).first();
      await t.b.db('audit').where({ seq: n }).del();
      const v = await verifyAudit(t.b.db);
      assert.equal(v.ok, true);
      assert.equal(v.ok && v.rows, n - 1);
      assert.notEqual(v.ok && v.head, last.hash, 'the head hash changes, so an exported head reveals it');
      await t.b.db('audit').insert(last);
      const back = await verifyAudit(t.b.db);
      assert.equal(back.ok && back.head, last.hash);
    });
  });
});
