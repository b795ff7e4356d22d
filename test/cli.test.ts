import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import knexFactory from 'knex';
import { exportJWK, generateKeyPair } from 'jose';
import { main } from '../src/cli/main.ts';
import { errorLine, fmtTime, table, type Io } from '../src/cli/output.ts';
import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS } from '../src/tokens/claims.ts';
import { introspect } from '../src/tokens/introspect.ts';
import { basic, postForm, startTestBroker, type TestBroker } from './helpers/broker.ts';

interface Run {
  code: number;
  out: string;
  err: string;
}

/** Runs the CLI in this process with captured output. */
async function cli(...argv: string[]): Promise<Run> {
  let out = '';
  let err = '';
  const io: Io = { out: (s) => void (out += s), err: (s) => void (err += s) };
  const code = await main(argv, io);
  return { code, out, err };
}

const json = (r: Run): any => {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.err}`);
  return JSON.parse(r.out);
};

/** One line on stderr, `cordon: …`, and nothing that looks like a stack trace. */
function assertOneLineError(r: Run, pattern?: RegExp): void {
  assert.notEqual(r.code, 0, 'expected a failure');
  const lines = r.err.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one stderr line, got:\n${r.err}`);
  assert.match(lines[0], /^cordon: /);
  assert.doesNotMatch(r.err, /\n\s+at /);
  if (pattern) assert.match(lines[0], pattern);
}

const ENV_KEYS = [
  'DATABASE_URL',
  'CORDON_KEY_DIR',
  'CORDON_AUDIT_DIR',
  'CORDON_POLICY_DIR',
  'CORDON_ISSUER',
  'CORDON_TOKEN',
  'CORDON_CLIENT_ID',
  'CORDON_CLIENT_SECRET',
  'CORDON_LOG_LEVEL',
];
let saved: Record<string, string | undefined> = {};

function setEnv(vars: Record<string, string | undefined>): void {
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
}

describe('cordon CLI', function () {
  this.timeout(30_000);
  let dir: string;

  beforeEach(() => {
    saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
    dir = mkdtempSync(join(tmpdir(), 'cordon-cli-'));
    setEnv({
      DATABASE_URL: `sqlite://${join(dir, 'data', 'cordon.sqlite')}`,
      CORDON_KEY_DIR: join(dir, 'data', 'keys'),
      CORDON_AUDIT_DIR: join(dir, 'data', 'audit'),
      CORDON_POLICY_DIR: resolve('policies'),
      CORDON_ISSUER: undefined,
      CORDON_TOKEN: undefined,
      CORDON_CLIENT_ID: undefined,
      CORDON_CLIENT_SECRET: undefined,
    });
  });

  afterEach(() => {
    setEnv(saved);
    rmSync(dir, { recursive: true, force: true });
  });

  describe('init and agents', () => {
    it('init creates the data dir, database, signing key and secret-hash key, and says so', async () => {
      const r = await cli('init');
      assert.equal(r.code, 0, r.err);
      assert.ok(existsSync(join(dir, 'data', 'cordon.sqlite')));
      assert.ok(existsSync(join(dir, 'data', 'keys', 'client-secret-hmac.key')));
      assert.match(r.out, /database\s+created/);
      assert.match(r.out, /signing key\s+created/);
      const again = json(await cli('init', '--json'));
      assert.ok(again.made.some((m: any) => m.item === 'signing key' && m.status === 'exists'));
      assert.ok(again.made.some((m: any) => m.item === 'migrations' && m.status === 'up to date'));
    });

    it('status warns about private files more open than they should be (and still exits 0)', async () => {
      const umask = process.umask(0o022);
      try {
        assert.equal((await cli('init')).code, 0);
        assert.deepEqual(json(await cli('status', '--json')).file_modes, []);
        assert.match((await cli('status')).out, /File permissions\n\s+ok/);
        const hmac = join(dir, 'data', 'keys', 'client-secret-hmac.key');
        chmodSync(hmac, 0o644);
        chmodSync(join(dir, 'data'), 0o755);
        const r = await cli('status', '--json');
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(JSON.parse(r.out).file_modes, [
          { path: join(dir, 'data'), mode: '0755', expected: '0700' },
          { path: hmac, mode: '0644', expected: '0600' },
        ]);
        const t = await cli('status');
        assert.equal(t.code, 0, t.err);
        assert.match(t.out, /File permissions\n.*2 private file\(s\) more open/);
        assert.match(t.out, new RegExp(`${hmac.replace(/[.\\]/g, '\\$&')}\\s+0644\\s+0600`));
      } finally {
        process.umask(umask);
      }
    });

    it('agent register --json prints client_id and client_secret; list, show, disable, enable, rotate', async () => {
      const reg = json(await cli('agent', 'register', 'planner', '--policy', 'research-planner', '--json'));
      assert.match(reg.client_id, /^agt_/);
      assert.equal(typeof reg.client_secret, 'string');
      assert.ok(reg.client_secret.length >= 40);
      assert.equal(reg.secret_hash, undefined);

      const human = await cli('agent', 'register', 'reader', '--policy', 'doc-reader');
      assert.equal(human.code, 0, human.err);
      assert.match(human.out, /client_secret\s+\S{40,}/);
      assert.match(human.out, /shown once/);

      const list = json(await cli('agent', 'list', '--json'));
      assert.deepEqual(list.map((a: any) => a.name).sort(), ['planner', 'reader']);
      assert.ok(list.every((a: any) => a.client_secret === undefined));
      const table = await cli('agent', 'list');
      assert.match(table.out, /^CLIENT_ID\s+NAME\s+POLICY/);
      assert.match(table.out, /planner\s+research-planner/);

      const shown = json(await cli('agent', 'show', reg.client_id, '--json'));
      assert.equal(shown.name, 'planner');
      assert.equal(shown.status, 'active');
      assert.ok(shown.scopes.includes('docs:write'));

      assert.equal((await cli('agent', 'disable', 'planner')).code, 0);
      assert.equal(json(await cli('agent', 'show', 'planner', '--json')).status, 'disabled');
      assert.equal(json(await cli('agent', 'enable', 'planner', '--json')).status, 'active');

      const rot = json(await cli('agent', 'rotate', 'planner', '--json'));
      assert.equal(rot.client_id, reg.client_id);
      assert.notEqual(rot.client_secret, reg.client_secret);

      const dup = await cli('agent', 'register', 'planner', '--policy', 'research-planner');
      assertOneLineError(dup, /already exists/);
      assertOneLineError(await cli('agent', 'register', 'x', '--policy', 'nope'), /no policy named "nope"/);
    });

    it('agent register --auth private_key_jwt takes public keys only, and shows no secret', async () => {
      const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
      const pub = join(dir, 'jwks.json');
      writeFileSync(pub, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1' }] }));
      const reg = json(await cli('agent', 'register', 'signer', '--policy', 'doc-reader', '--auth', 'private_key_jwt', '--jwks', pub, '--json'));
      assert.equal(reg.auth_method, 'private_key_jwt');
      assert.equal(reg.client_secret, undefined);
      assert.deepEqual(reg.jwks_kids, ['k1']);
      const priv = join(dir, 'private.json');
      writeFileSync(priv, JSON.stringify({ keys: [await exportJWK(privateKey)] }));
      assertOneLineError(await cli('agent', 'register', 'leaky', '--policy', 'doc-reader', '--auth', 'private_key_jwt', '--jwks', priv), /public keys only/);
      assertOneLineError(await cli('agent', 'register', 'nokeys', '--policy', 'doc-reader', '--auth', 'private_key_jwt'), /--jwks/);
      assertOneLineError(await cli('agent', 'rotate', 'signer'), /--jwks/);
      assert.equal(json(await cli('agent', 'rotate', 'signer', '--jwks', pub, '--json')).client_secret, undefined);
      // --json also works before the command.
      assert.equal(json(await cli('--json', 'agent', 'list')).length, 1);
    });

    it('agent bootstrap issues a one-time token (when tokens/bootstrap.ts is present)', async function () {
      await cli('agent', 'register', 'planner', '--policy', 'research-planner');
      const r = json(await cli('agent', 'bootstrap', 'planner', '--ttl', '5m', '--json'));
      assert.equal(typeof r.token, 'string');
      assert.ok(r.id);
      const left = Date.parse(r.expires_at) - Date.now();
      assert.ok(left > 290_000 && left <= 300_000, `expires in ${left}ms`);
      assertOneLineError(await cli('agent', 'bootstrap', 'planner', '--ttl', 'soon'), /invalid duration/);
    });

    it('ids shaped like paths or queries are one-line errors', async () => {
      await cli('init');
      for (const argv of [
        ['agent', 'show', '../etc'],
        ['agent', 'disable', "x' OR '1'='1"],
        ['session', 'show', '../etc'],
        ['session', 'list', '--agent', 'a/b'],
        ['revoke', '--token', '../etc'],
        ['revoke', '--session', '..'],
        ['revoke', '--agent', '../etc'],
      ]) {
        const r = await cli(...argv);
        assertOneLineError(r, /malformed/);
      }
    });

    it('configuration and usage errors are one line too', async () => {
      setEnv({ DATABASE_URL: 'mysql://x' });
      assertOneLineError(await cli('agent', 'list'), /^cordon: DATABASE_URL: /);
      // A mistyped path: refused, and nothing is created there (no database, no key).
      setEnv({ DATABASE_URL: `sqlite://${join(dir, 'typo', 'cordn.sqlite')}` });
      for (const argv of [['agent', 'list'], ['keys', 'list'], ['audit', 'verify'], ['status'], ['revoke', '--session', 'ses_x'], ['keys', 'rotate']]) {
        const r = await cli(...argv);
        assertOneLineError(r, /^cordon: DATABASE_URL: there is no database at .*cordn\.sqlite; run `cordon init`/);
      }
      assert.equal(existsSync(join(dir, 'typo')), false);
      assert.equal(existsSync(join(dir, 'data', 'keys')), false, 'no signing key was made either');
      setEnv({ DATABASE_URL: `sqlite://${join(dir, 'c.sqlite')}` });
      const unknown = await cli('agent', 'list', '--bogus');
      assertOneLineError(unknown, /unknown option/);
      assert.equal(unknown.code, 2);
      const revokeNothing = await cli('revoke');
      assertOneLineError(revokeNothing, /exactly one of/);
    });
  });

  describe('policies, keys and audit', () => {
    it('policy lint prints file:line:col per problem and exits 1; a good dir passes', async () => {
      const bad = join(dir, 'bad-policies');
      mkdirSync(bad);
      writeFileSync(join(bad, 'oops.yaml'), 'name: oops\ntoken_ttl: 10m\nsesion_ttl: 1h\nscopes: [docs:read]\n');
      const r = await cli('policy', 'lint', bad);
      assert.equal(r.code, 1);
      assert.match(r.out, /oops\.yaml:3:\d+: .*sesion_ttl/);
      assertOneLineError(r, /1 problem/);
      const j = await cli('policy', 'lint', bad, '--json');
      assert.equal(j.code, 1);
      assert.equal(JSON.parse(j.out).problems[0].line, 3);

      const good = await cli('policy', 'lint');
      assert.equal(good.code, 0, good.err);
      assert.match(good.out, /3 policies, no problems/);
      assertOneLineError(await cli('policy', 'lint', join(dir, 'missing')), /policy directory/);

      const list = json(await cli('policy', 'list', '--json'));
      assert.deepEqual(
        list.map((p: any) => p.name),
        ['doc-reader', 'research-planner', 'support-summarizer'],
      );
      assert.equal(list.find((p: any) => p.name === 'research-planner').token_ttl, 900);
    });

    it('policy lint prints warnings as file:line:col: warning: … and still exits 0', async () => {
      const pol = join(dir, 'warned-policies');
      mkdirSync(pol);
      const cred = '  tickets-vault: { provider: vault, vault_policies: [tickets-read], ttl: 10m }\n';
      writeFileSync(
        join(pol, 'orchestrator.yaml'),
        `name: orchestrator\nscopes: [cred:tickets-vault]\ndelegation: { max_depth: 1, scopes: [cred:tickets-vault] }\ncredentials:\n${cred}`,
      );
      writeFileSync(join(pol, 'sub.yaml'), `name: sub-agent\nscopes: [cred:tickets-vault]\ncredentials:\n${cred}`);
      const r = await cli('policy', 'lint', pol);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /sub\.yaml:4:3: warning: credentials\.tickets-vault: policy orchestrator also defines/);
      assert.match(r.out, /2 policies, no problems, 1 warning/);
      assert.equal(r.err, '');
      const j = await cli('policy', 'lint', pol, '--json');
      assert.equal(j.code, 0, j.err);
      const out = JSON.parse(j.out);
      assert.equal(out.ok, true);
      assert.deepEqual(
        out.problems.map((p: any) => [p.line, p.column, p.severity]),
        [[4, 3, 'warning']],
      );

      // With an error beside it, the error fails lint and is marked as one.
      writeFileSync(join(pol, 'ghost.yaml'), 'name: ghost\nscopes: [cred:ghost]\n');
      const bad = await cli('policy', 'lint', pol, '--json');
      assert.equal(bad.code, 1);
      assert.deepEqual(
        JSON.parse(bad.out).problems.map((p: any) => [p.line, p.severity]),
        [
          [2, 'error'],
          [4, 'warning'],
        ],
      );
    });

    it('keys rotate adds a kid and retires the old one, still published', async () => {
      assert.equal((await cli('init')).code, 0);
      const before = json(await cli('keys', 'list', '--json'));
      assert.equal(before.length, 1);
      const rot = json(await cli('keys', 'rotate', '--json'));
      assert.notEqual(rot.active.kid, before[0].kid);
      assert.equal(rot.retired.kid, before[0].kid);
      // Published at least as long as the longest token_ttl over the policies (15m).
      assert.ok(Date.parse(rot.retired.publish_until) >= Date.now() + 900_000);
      const after = json(await cli('keys', 'list', '--json'));
      assert.equal(after.length, 2);
      assert.deepEqual(after.map((k: any) => k.status).sort(), ['active', 'retired']);
      assert.ok(after.every((k: any) => k.published));
      assert.match((await cli('keys', 'list')).out, /^KID\s+ALG\s+STATUS/);
    });

    it('audit verify passes, then names row 2 after it is tampered with; export writes parseable JSON lines', async () => {
      await cli('agent', 'register', 'planner', '--policy', 'research-planner');
      await cli('agent', 'disable', 'planner');
      await cli('agent', 'enable', 'planner');
      const ok = await cli('audit', 'verify');
      assert.equal(ok.code, 0, ok.err);
      assert.match(ok.out, /audit chain intact: \d+ rows/);

      const lines = (await cli('audit', 'export', '--format', 'jsonl')).out.trimEnd().split('\n');
      const rows = lines.map((l) => JSON.parse(l));
      assert.ok(rows.length >= 4);
      assert.deepEqual(
        rows.map((r) => r.seq),
        rows.map((_, i) => i + 1),
      );
      assert.ok(rows.every((r) => typeof r.hash === 'string' && typeof r.event === 'string' && r.params));
      const since = (await cli('audit', 'export', '--since', '2')).out
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.equal(since[0].seq, 3);
      assert.equal(since.length, rows.length - 2);
      assertOneLineError(await cli('audit', 'export', '--format', 'csv'), /jsonl/);

      const tail = json(await cli('audit', 'tail', '-n', '2', '--json'));
      assert.equal(tail.length, 2);
      assert.equal(tail[1].seq, rows.length);

      // A head exported earlier catches a cut tail, which the chain alone cannot show.
      const exported = json(await cli('audit', 'verify', '--json')).head;
      assert.equal((await cli('audit', 'verify', '--head', exported)).code, 0);
      const db = knexFactory({ client: 'sqlite3', connection: { filename: join(dir, 'data', 'cordon.sqlite') }, useNullAsDefault: true });
      try {
        await db('audit').where({ seq: rows.length }).del();
        assert.equal((await cli('audit', 'verify')).code, 0, 'a cut tail still verifies on its own');
        assertOneLineError(await cli('audit', 'verify', '--head', exported), /no longer holds the exported head/);
        assertOneLineError(await cli('audit', 'verify', '--head', 'abc'), /64 hex digits/);
        await db('audit')
          .where({ seq: 2 })
          .update({ params: JSON.stringify({ name: 'mallory', policy: 'research-planner' }) });
      } finally {
        await db.destroy();
      }
      const broken = await cli('audit', 'verify');
      assertOneLineError(broken, /row 2\b/);
      const bj = await cli('audit', 'verify', '--json');
      assert.notEqual(bj.code, 0);
      assert.equal(JSON.parse(bj.out).broken_seq, 2);
    });

    it('audit verify names a row whose stored JSON no longer parses (and --json still answers)', async () => {
      await cli('agent', 'register', 'json-victim', '--policy', 'doc-reader');
      const db = knexFactory({ client: 'sqlite3', connection: { filename: join(dir, 'data', 'cordon.sqlite') }, useNullAsDefault: true });
      try {
        await db('audit').where({ seq: 1 }).update({ params: '{not json' });
      } finally {
        await db.destroy();
      }
      assertOneLineError(await cli('audit', 'verify'), /row 1\b/);
      assert.equal(JSON.parse((await cli('audit', 'verify', '--json')).out).broken_seq, 1);
      assert.equal((await cli('audit', 'tail', '-n', '3')).code, 0, 'the log can still be read');
    });

    it('serve on a port in use fails with one line naming the port, instead of claiming to listen', async () => {
      const holder = createNetServer();
      await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
      const port = (holder.address() as { port: number }).port;
      try {
        assertOneLineError(await cli('serve', '--port', String(port)), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use`));
      } finally {
        holder.close();
      }
    });

    it('agent rotate refuses --jwks for a secret agent (and does not rotate its secret)', async () => {
      const reg = json(await cli('agent', 'register', 'rot-secret', '--policy', 'doc-reader', '--json'));
      const pub = join(dir, 'rot.jwks.json');
      writeFileSync(pub, JSON.stringify({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'x'.repeat(43) }] }));
      assertOneLineError(await cli('agent', 'rotate', 'rot-secret', '--jwks', pub), /client secret/);
      const db = knexFactory({ client: 'sqlite3', connection: { filename: join(dir, 'data', 'cordon.sqlite') }, useNullAsDefault: true });
      try {
        const row = await db('agents').where({ id: reg.client_id }).first();
        assert.equal(row.updated_at, row.created_at, 'unchanged');
      } finally {
        await db.destroy();
      }
    });
  });

  describe('sessions, tokens, revocation and status (against a running test broker)', () => {
    let tb: TestBroker;
    let planner: { id: string; secret: string };
    let reader: { id: string; secret: string };
    let root: string;
    let child: string;

    const rootToken = async (): Promise<string> => {
      const r = await postForm(
        `${tb.url}/token`,
        { grant_type: 'client_credentials', scope: 'docs:read docs:write web:search', task: 'cli-test' },
        { authorization: basic(planner.id, planner.secret) },
      );
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.access_token;
    };
    const delegateTo = async (subject: string, actor: string, scope: string): Promise<string> => {
      const r = await postForm(
        `${tb.url}/token`,
        { grant_type: GRANT_TOKEN_EXCHANGE, subject_token: subject, subject_token_type: TOKEN_TYPE_ACCESS, requested_actor: actor, scope },
        { authorization: basic(planner.id, planner.secret) },
      );
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.access_token;
    };
    const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
    // The CLI is another process to the test broker: the broker learns its revocations from the
    // feed (polled at most every 250 ms on SQLite); reading the feed first makes that moment now.
    const active = async (jwt: string) => {
      await tb.b.live.poll();
      return (await introspect(tb.b, jwt)).active;
    };

    beforeEach(async () => {
      tb = await startTestBroker();
      planner = await tb.register('research-planner', 'research-planner');
      reader = await tb.register('doc-reader', 'doc-reader');
      setEnv({ DATABASE_URL: tb.b.config.databaseUrl, CORDON_KEY_DIR: tb.b.config.keyDir, CORDON_ISSUER: tb.url });
      root = await rootToken();
      child = await delegateTo(root, reader.id, 'docs:read');
    });
    afterEach(async () => {
      await tb.close();
    });

    it('session show prints the delegation tree for people and nested JSON for machines', async () => {
      const sid = claims(root).sid;
      const r = await cli('session', 'show', sid);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`Session ${sid}`));
      const rootLine = r.out.split('\n').find((l) => l.includes(`jti ${claims(root).jti}`))!;
      const childLine = r.out.split('\n').find((l) => l.includes(`jti ${claims(child).jti}`))!;
      assert.match(rootLine, /research-planner\s+\[docs:read docs:write web:search\]\s+depth 0\s+active/);
      assert.match(childLine, /└─ doc-reader\s+\[docs:read\]\s+depth 1\s+active/);
      assert.ok(childLine.indexOf('doc-reader') > rootLine.indexOf('research-planner'), 'child is indented below its parent');

      const j = json(await cli('session', 'show', sid, '--json'));
      assert.equal(j.session.sid, sid);
      assert.equal(j.session.state, 'active');
      assert.equal(j.tree.length, 1);
      assert.equal(j.tree[0].holder.name, 'research-planner');
      assert.equal(j.tree[0].children[0].holder.name, 'doc-reader');
      assert.equal(j.tree[0].children[0].depth, 1);
      assert.equal(j.tree[0].children[0].state, 'active');

      const list = json(await cli('session', 'list', '--agent', 'research-planner', '--live', '--json'));
      assert.equal(list.length, 1);
      assert.equal(list[0].tokens, 2);
      assert.equal(json(await cli('session', 'list', '--agent', 'doc-reader', '--json')).length, 0);
      assertOneLineError(await cli('session', 'show', 'ses_doesnotexist'), /no session/);
    });

    it('token inspect decodes, verifies the signature against the broker keys and reports activity', async () => {
      const r = json(await cli('token', 'inspect', child, '--json'));
      assert.equal(r.header.typ, 'at+jwt');
      assert.equal(r.claims.client_id, reader.id);
      assert.equal(r.claims.act.act.sub, planner.id);
      assert.equal(r.signature.valid, true);
      assert.equal(r.active, true);
      const human = await cli('token', 'inspect', child);
      assert.match(human.out, /signature\s+valid/);
      assert.match(human.out, /active\s+yes/);

      const [h, p, s] = child.split('.');
      const forged = `${h}.${p}.${s.slice(0, -4)}${s.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
      const bad = json(await cli('token', 'inspect', forged, '--json'));
      assert.equal(bad.signature.valid, false);
      assert.equal(bad.active, false);
      assertOneLineError(await cli('token', 'inspect', 'not-a-jwt'), /not a JWT/);
    });

    it('revoke --token revokes the subtree only; --chain from the root takes everything below', async () => {
      const grandchildless = await delegateTo(root, reader.id, 'web:search');
      const r = json(await cli('revoke', '--token', claims(child).jti, '--json'));
      assert.deepEqual(r.tokens, [claims(child).jti]);
      assert.equal(await active(child), false);
      assert.equal(await active(root), true);
      assert.equal(await active(grandchildless), true);
      const again = await cli('revoke', '--token', claims(child).jti);
      assert.match(again.out, /already revoked/);

      assert.equal(r.session_still_open, undefined, 'a delegated token is not a session root');
      const c = await cli('revoke', '--chain', claims(root).jti);
      assert.equal(c.code, 0, c.err);
      assert.match(c.out, /2 tokens/);
      // A root token: the output says the session stays open and how to end it.
      assert.match(c.out, new RegExp(`session ${claims(root).sid} itself stays open.*cordon revoke --session ${claims(root).sid}`));
      assert.equal(await active(root), false);
      assert.equal(await active(grandchildless), false);
      assert.equal(json(await cli('token', 'inspect', root, '--json')).state, 'revoked');
      assertOneLineError(await cli('revoke', '--token', 'nosuchjti'), /no token/);
    });

    it('revoke --session and --agent', async () => {
      const sid = claims(root).sid;
      const s = json(await cli('revoke', '--session', sid, '--json'));
      assert.deepEqual(s.sessions, [sid]);
      assert.equal(await active(root), false);
      assert.equal(await active(child), false);
      const tree = json(await cli('session', 'show', sid, '--json'));
      assert.equal(tree.session.state, 'revoked');
      assert.equal(tree.tree[0].state, 'revoked');
      assert.equal(tree.tree[0].children[0].state, 'revoked');

      const root2 = await rootToken();
      const child2 = await delegateTo(root2, reader.id, 'docs:read');
      const a = json(await cli('revoke', '--agent', 'doc-reader', '--json'));
      assert.deepEqual(a.tokens, [claims(child2).jti]);
      assert.equal(await active(child2), false);
      assert.equal(await active(root2), true);
      assert.equal(json(await cli('agent', 'show', 'doc-reader', '--json')).status, 'revoked');
      assertOneLineError(await cli('revoke', '--agent', 'planner', '--session', sid), /exactly one/);
    });

    it('exec opens a session for the agent in CORDON_CLIENT_ID and returns the command exit code', async function () {
      setEnv({ CORDON_CLIENT_ID: reader.id, CORDON_CLIENT_SECRET: reader.secret });
      const r = await cli(
        'exec',
        '--scope',
        'docs:read',
        '--task',
        'cli-exec',
        '--',
        process.execPath,
        '-e',
        'process.exit(process.env.CORDON_TOKEN && !process.env.CORDON_CLIENT_SECRET ? 3 : 4)',
      );
      assert.equal(r.code, 3, r.err);
      const sessions = json(await cli('session', 'list', '--agent', 'doc-reader', '--json'));
      assert.equal(sessions.length, 1);
      assert.equal(sessions[0].task, 'cli-exec');
    });

    it('status shows live sessions and tokens per agent, live and revoked-but-valid STS credentials, and no over-cap records', async () => {
      const sid = claims(root).sid;
      const now = Date.now();
      await tb.b.db('credentials').insert([
        {
          id: 'crd_1',
          sid,
          jti: claims(root).jti,
          agent_id: planner.id,
          name: 'docs-vault',
          provider: 'vault',
          handle: null,
          state: 'issued',
          created_at: now,
          expires_at: now + 600_000,
          revoked_at: null,
          note: null,
        },
        // Revocation recorded, but STS cannot kill it (no revoke_via_iam): still valid until expiry.
        {
          id: 'crd_2',
          sid,
          jti: claims(root).jti,
          agent_id: planner.id,
          name: 'reports-s3',
          provider: 'aws-sts',
          handle: null,
          state: 'issued',
          created_at: now,
          expires_at: now + 900_000,
          revoked_at: now,
          note: 'revocation recorded; valid at AWS until expiry',
        },
        // Really dead (denied by an IAM policy): in neither list.
        {
          id: 'crd_4',
          sid,
          jti: claims(root).jti,
          agent_id: planner.id,
          name: 'denied-s3',
          provider: 'aws-sts',
          handle: null,
          state: 'revoked',
          created_at: now,
          expires_at: now + 900_000,
          revoked_at: now,
          note: 'denied by policy',
        },
        {
          id: 'crd_3',
          sid,
          jti: claims(root).jti,
          agent_id: planner.id,
          name: 'old',
          provider: 'vault',
          handle: null,
          state: 'issued',
          created_at: now - 9e5,
          expires_at: now - 1000,
          revoked_at: null,
          note: null,
        },
      ]);
      const r = await cli('status');
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /research-planner\s+research-planner\s+active\s+1\s+1/);
      assert.match(r.out, /doc-reader\s+doc-reader\s+active\s+0\s+1/);
      assert.match(r.out, new RegExp(`${sid}\\s+docs-vault\\s+vault`));
      assert.match(r.out, /Revoked STS credentials still valid[^\n]*\n[^\n]*\n[^\n]*reports-s3/);
      assert.doesNotMatch(r.out, /\bold\b/);
      assert.doesNotMatch(r.out, /denied-s3/);
      assert.match(r.out, /Lifetime caps\n\s+ok/);

      const j = json(await cli('status', '--json'));
      const p = j.agents.find((a: any) => a.name === 'research-planner');
      assert.equal(p.live_sessions, 1);
      assert.equal(p.live_tokens, 1);
      assert.deepEqual(
        j.live_credentials.map((g: any) => [g.sid, g.credentials.map((c: any) => c.name)]),
        [[sid, ['docs-vault']]],
      );
      assert.deepEqual(
        j.revoked_sts_still_valid.map((c: any) => c.name),
        ['reports-s3'],
      );
      assert.deepEqual(j.over_cap, []);

      // A record past its cap is reported (and the exit code says so).
      await tb.b
        .db('tokens')
        .where({ jti: claims(child).jti })
        .update({ expires_at: Date.now() + 3_600_000 });
      const bad = await cli('status', '--json');
      assert.equal(bad.code, 1);
      assert.deepEqual(
        JSON.parse(bad.out).over_cap.map((o: any) => [o.kind, o.id]),
        [['token', claims(child).jti]],
      );
    });
  });

  describe('creds and exec (talking to a broker over HTTP)', () => {
    let server: Server;
    let url: string;
    const answers: Record<string, { status: number; body: unknown }> = {
      'reports-s3': {
        status: 200,
        body: {
          name: 'reports-s3',
          provider: 'aws-sts',
          expires_at: '2026-01-01T00:15:00Z',
          lease_id: 'cordon-agt-x',
          credentials: { AccessKeyId: 'ASIAEXAMPLE', SecretAccessKey: 'se/cr+et=', SessionToken: 'tok en', Expiration: '2026-01-01T00:15:00Z' },
        },
      },
      'docs-vault': {
        status: 200,
        body: { name: 'docs-vault', provider: 'vault', expires_at: '2026-01-01T00:15:00Z', credentials: { client_token: 'hvs.CAES', accessor: 'acc' } },
      },
      'tickets-db': {
        status: 200,
        body: {
          name: 'tickets-db',
          provider: 'vault',
          expires_at: '2026-01-01T00:10:00Z',
          lease_id: 'database/creds/x/1',
          credentials: { username: 'v-agent-ro', password: "p'w" },
        },
      },
      nope: { status: 403, body: { error: 'insufficient_scope', error_description: 'the token does not hold cred:nope' } },
    };
    let seen: Array<{ path: string; auth?: string }> = [];

    before(async () => {
      server = createServer((req, res) => {
        seen.push({ path: req.url!, auth: req.headers.authorization });
        const name = decodeURIComponent(req.url!.replace(/^\/credentials\//, ''));
        const a = req.method === 'POST' ? answers[name] : undefined;
        res.writeHead(a?.status ?? 404, { 'content-type': 'application/json' });
        res.end(JSON.stringify(a?.body ?? { error: 'not_found', error_description: 'no such route' }));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const addr = server.address();
      url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    });
    after(() => new Promise<void>((r) => server.close(() => r())));
    beforeEach(() => {
      seen = [];
      setEnv({ CORDON_ISSUER: url });
    });

    it('prints the broker answer as json, env exports or a credential_process document', async () => {
      const j = json(await cli('creds', 'reports-s3', '--token', 'T1'));
      assert.equal(j.credentials.AccessKeyId, 'ASIAEXAMPLE');
      assert.deepEqual(seen[0], { path: '/credentials/reports-s3', auth: 'Bearer T1' });

      setEnv({ CORDON_TOKEN: 'T2' });
      const env = await cli('creds', 'reports-s3', '--format', 'env');
      assert.equal(env.code, 0, env.err);
      assert.equal(env.out, "export AWS_ACCESS_KEY_ID=ASIAEXAMPLE\nexport AWS_SECRET_ACCESS_KEY=se/cr+et=\nexport AWS_SESSION_TOKEN='tok en'\n");
      assert.equal(seen.at(-1)!.auth, 'Bearer T2');

      const cp = await cli('creds', 'reports-s3', '--format', 'credential_process');
      assert.equal(
        cp.out,
        '{"Version":1,"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"se/cr+et=","SessionToken":"tok en","Expiration":"2026-01-01T00:15:00Z"}\n',
      );

      assert.equal((await cli('creds', 'docs-vault', '--format', 'env')).out, 'export VAULT_TOKEN=hvs.CAES\n');
      assert.equal((await cli('creds', 'tickets-db', '--format', 'env')).out, "export TICKETS_DB_USERNAME=v-agent-ro\nexport TICKETS_DB_PASSWORD='p'\\''w'\n");
      assertOneLineError(await cli('creds', 'docs-vault', '--format', 'credential_process'), /aws/i);
    });

    it('broker refusals become `cordon: <error>: <error_description>`, exit 1', async () => {
      const r = await cli('creds', 'nope', '--token', 'T');
      assertOneLineError(r, /^cordon: insufficient_scope: the token does not hold cred:nope$/);
      assert.equal(r.code, 1);
      assertOneLineError(await cli('creds', 'reports-s3'), /CORDON_TOKEN/);
      assertOneLineError(await cli('creds', '../etc', '--token', 'T'), /credential name/);
      setEnv({ CORDON_ISSUER: 'http://127.0.0.1:9' });
      assertOneLineError(await cli('creds', 'reports-s3', '--token', 'T'), /cannot reach the broker/);
    });

    it('exec needs the agent credentials in the environment', async () => {
      assertOneLineError(await cli('exec', '--scope', 'docs:read', '--task', 't', '--', 'true'), /CORDON_CLIENT_ID/);
      setEnv({ CORDON_CLIENT_SECRET: 's' });
      assertOneLineError(await cli('exec', '--scope', 'docs:read', '--task', 't', '--', 'true'), /CORDON_CLIENT_ID: must be set/);
      setEnv({ CORDON_CLIENT_SECRET: undefined });
      assertOneLineError(await cli('exec', '--scope', 'docs:read', '--task', 't'), /command to run/);
      if (!existsSync(resolve('src/cli/exec.ts'))) {
        setEnv({ CORDON_CLIENT_ID: 'agt_x', CORDON_CLIENT_SECRET: 's' });
        assertOneLineError(await cli('exec', '--scope', 'docs:read', '--task', 't', '--', 'true'), /exec\.ts is missing/);
      }
    });
  });

  it('demo runs end to end and exits 0 (spawned)', function () {
    this.timeout(60_000);
    const r = spawnSync(process.execPath, ['bin/cordon.js', 'demo'], { encoding: 'utf8', timeout: 50_000, env: { ...process.env, NO_COLOR: '1' } });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    for (const heading of [
      'Register two agents',
      'opens a session',
      'outside the policy is refused',
      'delegates a narrower scope',
      'Escalation is refused',
      'everything below it goes too',
      'Revoke the whole session',
      'Through the gateway: an agent calls an API with a key it never holds',
      'The agent tries to read the key itself: refused',
      'audit chain intact',
    ]) {
      assert.ok(r.stdout.includes(heading), `missing "${heading}" in:\n${r.stdout}`);
    }
    assert.match(r.stdout, /"error": "invalid_scope"/);
    assert.match(r.stdout, /"active": false/);
    // The gateway act: on a free port, the key injected upstream, a call outside the rules and the key itself refused, all audited.
    const gatewayPort = /its gateway at http:\/\/127\.0\.0\.1:(\d+)/.exec(r.stdout)?.[1];
    assert.ok(gatewayPort && gatewayPort !== '8081', 'the demo gateway runs on a free port');
    assert.match(r.stdout, /The API received "Authorization: Bearer tk-live-…"/);
    assert.match(r.stdout, /"error": "access_denied",\n\s+"error_description": "no rule of upstream tickets allows POST \/tickets\/42\/comments"/);
    assert.match(r.stdout, /POST \/credentials\/tickets-key[^\n]*\n\s+HTTP 403\n/);
    assert.match(r.stdout, /The agent never saw the key/);
    assert.match(r.stdout, /gateway\.call\s+allow\s+ticket-bot\s+ses_\S+\s+upstream=tickets method=GET path=\/tickets\/42 rule=read status=200/);
    assert.match(r.stdout, /gateway\.call\s+deny\s+ticket-bot/);
    assert.doesNotMatch(r.stdout, /tk-live-[0-9a-f]{4}/, 'no part of the key beyond its prefix is printed');
    const tmp = /SQLite and keys in (\S+?),/.exec(r.stdout)?.[1];
    assert.ok(tmp && !existsSync(tmp), 'the demo removes its temp dir');
  });
});

describe('cordon CLI output', () => {
  it('tables and error lines escape control characters from agents and the database, keeping only its own colour codes', () => {
    const forged = 'x\x1b[2J\n99  2026-01-01  session.open  allow';
    const out = table(
      ['SEQ', 'REASON'],
      [
        [1, forged],
        [2, '\x1b[32mgreen\x1b[39m'],
      ],
    );
    assert.equal(out.trimEnd().split('\n').length, 3, 'one line per row, whatever a cell holds');
    assert.ok(!out.includes('\x1b[2J'), 'no terminal control sequence from data');
    assert.match(out, /x\\u001b\[2J\\u000a99/);
    assert.ok(out.includes('\x1b[32mgreen\x1b[39m'), 'the styling the CLI writes itself survives');
    assert.equal(errorLine(new Error('bad kid \x1b]0;pwned\x07 here')), 'bad kid \\u001b]0;pwned\\u0007 here');
    assert.match(fmtTime(1e308), /out of range/);
  });

  it('a database error shows the driver’s message, never the SQL or its values', () => {
    const e = Object.assign(new Error("insert into `agents` (`secret_hash`) values ('deadbeefcafe') - SQLITE_BUSY: database is locked"), {
      code: 'SQLITE_BUSY',
    });
    const line = errorLine(e);
    assert.equal(line, 'database error: SQLITE_BUSY: database is locked (DATABASE_URL)');
  });
});
