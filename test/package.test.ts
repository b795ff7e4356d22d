/**
 * Cordon as a package: a project outside src/ (examples/package-consumer) imports `cordon` and
 * `cordon/middleware` with plain Node.js — no TypeScript loader — and type-checks against the
 * published declarations. `npm test` builds dist/ first (and `npm install` does, as `prepare`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';

const run = promisify(execFile);

describe('the cordon package, used as a user would', function () {
  this.timeout(120_000);
  let tb: TestBroker;
  let dir: string;

  before(async () => {
    assert.ok(existsSync(resolve('dist/src/index.js')), 'dist/ is missing: npm test builds it (npm run build)');
    tb = await startTestBroker();
    dir = mkdtempSync(join(tmpdir(), 'cordon-consumer-'));
    cpSync(resolve('examples/package-consumer'), dir, { recursive: true });
    // What `npm install` of "file:../.." makes: node_modules/cordon pointing at the package.
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(resolve('.'), join(dir, 'node_modules', 'cordon'), 'dir');
  });
  after(async () => {
    await tb?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('plain JavaScript imports the SDK and the middleware from the compiled package and opens a session', async () => {
    const a = await tb.register('consumer', 'doc-reader');
    const { stdout } = await run(process.execPath, ['agent.mjs'], {
      cwd: dir,
      // No --import tsx here: whatever the parent process was started with is not inherited.
      env: { PATH: process.env.PATH, CORDON_ISSUER: tb.url, CORDON_CLIENT_ID: a.id, CORDON_CLIENT_SECRET: a.secret, NODE_OPTIONS: '' },
    });
    const out = JSON.parse(stdout.trim().split('\n').at(-1)!);
    assert.match(out.sid, /^ses_/);
    assert.deepEqual(out.scope, ['docs:read']);
    assert.equal(out.tokenParts, 3);
    assert.equal(out.closedError, 'closed');
    assert.equal(out.middleware, 'function');
    assert.equal(out.revocationSet, 'function');
  });

  it('a TypeScript project type-checks against the published declarations', async () => {
    const tsc = resolve('node_modules/typescript/bin/tsc');
    const r = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: dir }).catch((e: { stdout?: string; stderr?: string }) => e);
    assert.equal((r as { stdout?: string }).stdout ?? '', '', 'tsc reported errors');
  });

  it('the cordon bin runs the compiled CLI', async () => {
    const { stdout } = await run(process.execPath, [resolve('bin/cordon.js'), '--help'], { env: { PATH: process.env.PATH, NODE_OPTIONS: '' } });
    assert.match(stdout, /Usage: cordon/);
  });
});
