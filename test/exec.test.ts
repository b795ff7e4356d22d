import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runExec } from '../src/cli/exec.ts';
import { introspect } from '../src/tokens/introspect.ts';
import { tokens } from '../src/store/tokens.ts';
import { CordonSdkError } from '../src/sdk/errors.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { credFixture, type CredFixture } from './credentials.kit.ts';

const NODE = process.execPath;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(f: () => T | undefined, ms = 10_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) assert.fail('timed out');
    await sleep(20);
  }
}

/**
 * `cordon exec` end to end: a real broker, a real child process, and a second process
 * (`runExec` in its own node) for signals.
 */
describe('cordon exec (runExec)', () => {
  let t: TestBroker;
  let orch: { id: string; secret: string };
  let dir: string;
  const saved: Record<string, string | undefined> = {};

  before(async () => {
    t = await startTestBroker({ policyDir: resolve('examples/policies') });
    orch = await t.register('orch', 'example-orchestrator');
    dir = mkdtempSync(join(tmpdir(), 'cordon-exec-'));
    for (const k of ['CORDON_CLIENT_SECRET', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_PROFILE']) saved[k] = process.env[k];
  });
  after(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const base = () => ({ issuer: t.url, clientId: orch.id, clientSecret: orch.secret, scope: 'tickets:read', task: 'exec-test', creds: [] as string[] });
  /** The child's JSON once it is whole (the file exists before the child has finished writing it). */
  const readJson = (f: string) => {
    try {
      return JSON.parse(readFileSync(f, 'utf8'));
    } catch {
      return undefined;
    }
  };

  it('passes the exit code through', async () => {
    assert.equal(await runExec({ ...base(), command: [NODE, '-e', 'process.exit(7)'] }), 0 + 7);
    assert.equal(await runExec({ ...base(), command: [NODE, '-e', ''] }), 0);
  });

  it('returns 128 + signal when the child is killed, 127 when the command does not exist', async () => {
    assert.equal(await runExec({ ...base(), command: [NODE, '-e', "process.kill(process.pid, 'SIGKILL')"] }), 128 + 9);
    assert.equal(await runExec({ ...base(), command: ['/nonexistent/cordon-no-such-command'] }), 127);
  });

  it('gives the child a live session token and a fresh-token endpoint, never the agent secret, and revokes the session on exit', async () => {
    const out = join(dir, 'child1.json');
    process.env.CORDON_CLIENT_SECRET = 'must-not-leak';
    const script = `
      const fs = require('fs');
      (async () => {
        const r = await fetch(process.env.CORDON_TOKEN_URI, { headers: { authorization: process.env.CORDON_TOKEN_AUTHORIZATION } });
        const bad = await fetch(process.env.CORDON_TOKEN_URI, { headers: { authorization: 'guess' } });
        fs.writeFileSync(process.env.OUT, JSON.stringify({
          token: process.env.CORDON_TOKEN, issuer: process.env.CORDON_ISSUER, sid: process.env.CORDON_SESSION,
          secret: process.env.CORDON_CLIENT_SECRET ?? null, fresh: await r.json(), badStatus: bad.status,
        }));
        process.exit(3);
      })();`;
    process.env.OUT = out;
    const p = runExec({ ...base(), command: [NODE, '-e', script] });
    const seen = await waitFor(() => (existsSync(out) ? readJson(out) : undefined));
    const during = (await introspect(t.b, seen.token)).active;
    assert.equal(await p, 3);
    delete process.env.OUT;
    assert.equal(during, true, 'the token was live while the child ran');
    assert.equal(seen.secret, null, 'CORDON_CLIENT_SECRET is not passed on');
    assert.equal(seen.issuer, t.url);
    assert.equal(seen.fresh.sid, seen.sid);
    assert.equal(seen.fresh.token_type, 'Bearer');
    assert.ok(seen.fresh.expires_in > 0);
    assert.equal(seen.badStatus, 401, 'the local endpoint wants its authorization value');
    assert.equal((await introspect(t.b, seen.token)).active, false, 'revoked when the child exited');
    assert.equal((await introspect(t.b, seen.fresh.access_token)).active, false);
    const row = await t.b.db('sessions').where({ sid: seen.sid }).first();
    assert.notEqual(row.revoked_at, null, 'the session itself is ended, so nobody can renew it');
  });

  it('ends the session when the command outlives every token it was given (a fresh token of the session first, then end_session)', async () => {
    const ready = join(dir, 'long.ready');
    const go = join(dir, 'long.go');
    const script = `const fs = require('fs'); fs.writeFileSync(process.env.READY, process.env.CORDON_SESSION); const t = setInterval(() => { if (fs.existsSync(process.env.GO)) { clearInterval(t); process.exit(0); } }, 20);`;
    const realNow = Date.now;
    process.env.READY = ready;
    process.env.GO = go;
    try {
      const p = runExec({ ...base(), command: [NODE, '-e', script] });
      const sid = await waitFor(() => (existsSync(ready) ? readFileSync(ready, 'utf8') : undefined));
      // The command runs for 11 minutes (token_ttl 10m, session_ttl 1h), on both clocks.
      const skew = 11 * 60_000;
      Date.now = () => realNow() + skew;
      t.clock.advance(skew);
      writeFileSync(go, '');
      assert.equal(await p, 0);
      const row = await t.b.db('sessions').where({ sid }).first();
      assert.notEqual(row.revoked_at, null, 'the session was ended although every token the agent held had expired');
    } finally {
      Date.now = realNow;
      delete process.env.READY;
      delete process.env.GO;
    }
  });

  it('CordonAgent.fromEnv() inside the child runs on the local token endpoint (no secret needed)', async () => {
    const out = join(dir, 'child-sdk.json');
    const script = `
      import { CordonAgent } from 'cordon';
      import { writeFileSync } from 'node:fs';
      const a = CordonAgent.fromEnv();
      const [t1, t2] = await Promise.all([a.token(), a.token()]);
      writeFileSync(process.env.OUT, JSON.stringify({ mode: a.mode, same: t1 === t2, token: t1, sid: a.session.sid, env: process.env.CORDON_TOKEN }));`;
    process.env.OUT = out;
    const code = await runExec({ ...base(), command: [NODE, '--import', 'tsx', '--input-type=module', '-e', script] });
    delete process.env.OUT;
    assert.equal(code, 0);
    const seen = readJson(out);
    assert.equal(seen.mode, 'local');
    assert.equal(seen.same, true);
    assert.equal(seen.token, seen.env, 'the same live token the environment carries');
    assert.match(seen.sid, /^ses_/);
    assert.equal((await introspect(t.b, seen.token)).active, false, 'revoked on exit');
  });

  it('forwards SIGTERM to the child, returns 143 and revokes the session (runExec in its own process)', async function () {
    this.timeout(30_000);
    const out = join(dir, 'child2.json');
    const child = `require('fs').writeFileSync(process.env.OUT, JSON.stringify({ token: process.env.CORDON_TOKEN })); setInterval(() => {}, 1000);`;
    const opts = { ...base(), command: [NODE, '-e', child] };
    const wrapper = spawn(
      NODE,
      [
        '--import',
        'tsx',
        '--no-warnings',
        '--input-type=module',
        '-e',
        "import { runExec } from './src/cli/exec.ts'; process.exitCode = await runExec(JSON.parse(process.env.EXEC_OPTS));",
      ],
      { env: { ...process.env, EXEC_OPTS: JSON.stringify(opts), OUT: out }, stdio: ['ignore', 'inherit', 'inherit'] },
    );
    const exited = new Promise<number | null>((r) => wrapper.on('exit', (code) => r(code)));
    const seen = await waitFor(() => (existsSync(out) ? readJson(out) : undefined), 20_000);
    assert.equal((await introspect(t.b, seen.token)).active, true);
    wrapper.kill('SIGTERM');
    assert.equal(await exited, 128 + 15);
    assert.equal((await introspect(t.b, seen.token)).active, false, 'revoked after the signal');
  });

  it('through the real CLI (node bin/cordon.js exec): exit code passthrough, and SIGHUP forwarded then the session revoked', async function () {
    this.timeout(30_000);
    const env = { ...process.env, CORDON_ISSUER: t.url, CORDON_CLIENT_ID: orch.id, CORDON_CLIENT_SECRET: orch.secret };
    const cli = (args: string[], extra: Record<string, string> = {}) =>
      spawn(NODE, ['bin/cordon.js', 'exec', '--scope', 'tickets:read', '--task', 'cli-test', '--', ...args], {
        env: { ...env, ...extra },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
    const exitOf = (p: ReturnType<typeof spawn>) => new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    assert.equal(await exitOf(cli([NODE, '-e', 'process.exit(42)'])), 42);

    const out = join(dir, 'child-cli.json');
    const child = `process.on('SIGHUP', () => process.exit(5)); require('fs').writeFileSync(process.env.OUT, JSON.stringify({ token: process.env.CORDON_TOKEN, secret: process.env.CORDON_CLIENT_SECRET ?? null })); setInterval(() => {}, 1000);`;
    const p = cli([NODE, '-e', child], { OUT: out });
    const exited = exitOf(p);
    const seen = await waitFor(() => (existsSync(out) ? readJson(out) : undefined), 20_000);
    assert.equal(seen.secret, null);
    assert.equal((await introspect(t.b, seen.token)).active, true);
    p.kill('SIGHUP');
    assert.equal(await exited, 5, "the child's own exit code after handling the forwarded signal");
    assert.equal((await introspect(t.b, seen.token)).active, false);
  });

  it('Ctrl-C at a terminal reaches the command once (the terminal signals the whole foreground group; no second copy forwarded), and the session still ends', async function () {
    // util-linux `script` gives the command a real pseudo-terminal; it is on this machine kind (Debian), so its absence is a failure, not a skip.
    assert.equal(spawnSync('script', ['--version']).status, 0, 'util-linux script(1) is needed for this test');
    this.timeout(30_000);
    const out = join(dir, 'sigint.count');
    const child = join(dir, 'sigint-child.cjs');
    writeFileSync(
      child,
      `const fs = require('fs'); let n = 0;
       process.on('SIGINT', () => { if (++n === 1) setTimeout(() => { fs.writeFileSync(process.env.OUT, JSON.stringify({ n, token: process.env.CORDON_TOKEN })); process.exit(3); }, 700); });
       fs.writeFileSync(process.env.OUT + '.ready', ''); setInterval(() => {}, 1000);`,
    );
    // script(1) runs the command through $SHELL -c. A dash that stays in between (SHELL unset on CI
    // means /bin/sh, which is dash on Debian) is itself in the foreground group and dies of the
    // SIGINT, so `exec` replaces it and SHELL is pinned: the test is the same on every machine.
    const env = { ...process.env, SHELL: '/bin/sh', CORDON_ISSUER: t.url, CORDON_CLIENT_ID: orch.id, CORDON_CLIENT_SECRET: orch.secret, OUT: out };
    const cmd = `exec ${NODE} bin/cordon.js exec --scope tickets:read --task tty -- ${NODE} ${child}`;
    const p = spawn('script', ['-qefc', cmd, '/dev/null'], { env, stdio: ['pipe', 'ignore', 'inherit'] });
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    await waitFor(() => (existsSync(`${out}.ready`) ? true : undefined), 20_000);
    p.stdin.write('\x03'); // Ctrl-C: the line discipline sends SIGINT to the foreground process group
    assert.equal(await exited, 3, "the command's own exit code");
    const seen = readJson(out);
    assert.equal(seen.n, 1, `the command got SIGINT ${seen.n} times`);
    assert.equal((await introspect(t.b, seen.token)).active, false, 'the session was revoked');
  });

  describe('AWS container credentials for an aws-sts --cred', () => {
    // The broker's /credentials endpoint is answered here by a front that proxies everything
    // else to the test broker, so the container-credentials path is tested on its own.
    let front: Server;
    let frontUrl: string;
    let issued = 0;
    before(async () => {
      // eslint-disable-next-line @typescript-eslint/no-misused-promises -- a test double: a throw here fails the test at the client
      front = createServer(async (req, res) => {
        const chunks: Buffer[] = [];
        for await (const c of req) chunks.push(c as Buffer);
        if (req.method === 'POST' && req.url?.startsWith('/credentials/')) {
          const active = await introspect(t.b, String(req.headers.authorization ?? '').replace(/^Bearer /, ''));
          if (!active.active) {
            res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_token', error_description: 'inactive' }));
            return;
          }
          if (!String(active.scope).split(' ').includes('cred:reports-s3')) {
            res
              .writeHead(403, { 'content-type': 'application/json' })
              .end(JSON.stringify({ error: 'insufficient_scope', error_description: 'cred:reports-s3 not granted' }));
            return;
          }
          issued++;
          const exp = new Date(Date.now() + 15 * 60_000).toISOString();
          res.writeHead(200, { 'content-type': 'application/json' }).end(
            JSON.stringify({
              name: 'reports-s3',
              provider: 'aws-sts',
              expires_at: exp,
              lease_id: 'l1',
              credentials: { AccessKeyId: `ASIAEXEC${issued}`, SecretAccessKey: 'sk', SessionToken: 'st', Expiration: exp },
            }),
          );
          return;
        }
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !['host', 'content-length', 'connection'].includes(k)) headers[k] = v;
        const r = await fetch(`${t.url}${req.url}`, { method: req.method, headers, body: chunks.length ? Buffer.concat(chunks) : undefined });
        const body = Buffer.from(await r.arrayBuffer());
        res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/octet-stream' }).end(body);
      });
      await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
      frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((r) => front.close(() => r())));

    it("the child's AWS SDK default chain finds the local endpoint (standing keys removed) and gets the broker's keys through it", async () => {
      const out = join(dir, 'aws.json');
      process.env.AWS_ACCESS_KEY_ID = 'AKIASTANDING';
      process.env.AWS_SECRET_ACCESS_KEY = 'standing-secret';
      process.env.AWS_PROFILE = 'default';
      const script = `
        import { defaultProvider } from '@aws-sdk/credential-provider-node';
        import { writeFileSync } from 'node:fs';
        const c = await defaultProvider()();
        const r = await fetch(process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI, { headers: { authorization: 'wrong' } });
        writeFileSync(process.env.OUT, JSON.stringify({ id: c.accessKeyId, secret: c.secretAccessKey, token: c.sessionToken, exp: c.expiration, uri: process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI, standing: process.env.AWS_ACCESS_KEY_ID ?? null, wrong: r.status }));`;
      process.env.OUT = out;
      const code = await runExec({
        issuer: frontUrl,
        clientId: orch.id,
        clientSecret: orch.secret,
        scope: 'tickets:read cred:reports-s3',
        creds: ['reports-s3'],
        command: [NODE, '--input-type=module', '-e', script],
      });
      delete process.env.OUT;
      assert.equal(code, 0);
      const seen = readJson(out);
      assert.match(seen.uri, /^http:\/\/127\.0\.0\.1:\d+\/aws\/reports-s3$/);
      assert.equal(seen.standing, null, 'standing AWS keys are not passed on');
      assert.match(seen.id, /^ASIAEXEC\d+$/);
      assert.equal(seen.secret, 'sk');
      assert.equal(seen.token, 'st');
      assert.ok(Date.parse(seen.exp) > Date.now());
      assert.equal(seen.wrong, 401);
    });

    it('a [default] profile in ~/.aws/config (credential_process, SSO, role_arn) does not win over the local endpoint; its region is kept', async () => {
      const out = join(dir, 'aws-config.json');
      const config = join(dir, 'aws-config');
      const standing = join(dir, 'standing.sh');
      writeFileSync(standing, `#!/bin/sh\necho '{"Version":1,"AccessKeyId":"AKIASTANDINGPROCESS","SecretAccessKey":"standing"}'\n`, { mode: 0o755 });
      writeFileSync(config, `[default]\nregion = eu-north-1\ncredential_process = ${standing}\n\n[profile other]\nregion = ap-south-1\n`);
      const saved = {
        AWS_CONFIG_FILE: process.env.AWS_CONFIG_FILE,
        AWS_REGION: process.env.AWS_REGION,
        AWS_DEFAULT_REGION: process.env.AWS_DEFAULT_REGION,
        AWS_PROFILE: process.env.AWS_PROFILE,
      };
      process.env.AWS_CONFIG_FILE = config;
      delete process.env.AWS_REGION;
      delete process.env.AWS_DEFAULT_REGION;
      delete process.env.AWS_PROFILE;
      const script = `
        import { defaultProvider } from '@aws-sdk/credential-provider-node';
        import { writeFileSync } from 'node:fs';
        const c = await defaultProvider()();
        writeFileSync(process.env.OUT, JSON.stringify({ id: c.accessKeyId, region: process.env.AWS_REGION ?? null, config: process.env.AWS_CONFIG_FILE }));`;
      process.env.OUT = out;
      try {
        const code = await runExec({
          issuer: frontUrl,
          clientId: orch.id,
          clientSecret: orch.secret,
          scope: 'tickets:read cred:reports-s3',
          creds: ['reports-s3'],
          command: [NODE, '--input-type=module', '-e', script],
        });
        assert.equal(code, 0);
      } finally {
        delete process.env.OUT;
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
      const seen = readJson(out);
      assert.match(seen.id, /^ASIAEXEC\d+$/, `the child used ${seen.id}`);
      assert.equal(seen.region, 'eu-north-1', "the config's region moved into AWS_REGION");
      assert.equal(seen.config, '/dev/null');
    });

    it('refuses to start when a credential is not granted, and still revokes the session', async () => {
      const before = issued;
      const live = async () => (await tokens.countLive(t.b.db, t.clock.now())).find((r) => r.clientId === orch.id)?.count ?? 0;
      const liveBefore = await live();
      await assert.rejects(
        runExec({ issuer: frontUrl, clientId: orch.id, clientSecret: orch.secret, scope: 'tickets:read', creds: ['reports-s3'], command: [NODE, '-e', ''] }),
        (e: CordonSdkError) => e.code === 'oauth' && e.error === 'insufficient_scope',
      );
      assert.equal(issued, before);
      assert.equal(await live(), liveBefore, 'the session opened for the command was revoked');
    });
  });
  describe('with the real credentials endpoint (Vault and STS doubles)', () => {
    let f: CredFixture;
    before(async () => {
      f = await credFixture();
    });
    after(async () => {
      await f?.stop();
    });

    it('a Vault token credential becomes VAULT_TOKEN, a dynamic secret CORDON_CRED_<NAME>; both die with the session when the command exits', async () => {
      const a = await f.agent('exec-vault', 'creds-owner');
      const out = join(dir, 'vault.json');
      const script = `require('fs').writeFileSync(process.env.OUT, JSON.stringify({ vault: process.env.VAULT_TOKEN, db: process.env.CORDON_CRED_VAULT_DB, uri: process.env.CORDON_CREDENTIALS_URI }))`;
      process.env.OUT = out;
      const code = await runExec({
        issuer: f.tb.url,
        clientId: a.id,
        clientSecret: a.secret,
        scope: 'work:read cred:vault-token cred:vault-db',
        task: 'exec-vault',
        creds: ['vault-token', 'vault-db'],
        command: [NODE, '-e', script],
      });
      delete process.env.OUT;
      assert.equal(code, 0);
      const seen = readJson(out);
      assert.ok(seen.vault, 'VAULT_TOKEN is set');
      const db = JSON.parse(seen.db);
      assert.ok(db.username && db.password, `CORDON_CRED_VAULT_DB: ${seen.db}`);
      assert.match(seen.uri, /^http:\/\/127\.0\.0\.1:\d+\/credentials$/);
      assert.equal(f.vault.isTokenActive(seen.vault), false, 'the Vault token was revoked with the session');
    });
  });
});
