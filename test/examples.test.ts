import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { StsDouble } from './doubles/sts.ts';
import { VaultDouble } from './doubles/vault.ts';

/**
 * The examples, run the way the README runs them: `cordon serve` as its own process on the
 * example policies (with the STS provider pointed at the STS double), agents registered with
 * `cordon agent register --json`, the resource server, the orchestrator (which runs the
 * sub-agent), exec-aws.sh, and the MCP example (its server behind the gateway, the API key in
 * the Vault double). If an example rots, this fails.
 */
const NODE = process.execPath;
const ROLE = 'arn:aws:iam::123456789012:role/agent-reports';
const TICKETS_MCP_KEY = 'tmk-EXAMPLE-5e4d3c2b1a';
/** The tickets MCP server's address in examples/policies/example-mcp-reader.yaml (the test moves it to a free port). */
const MCP_POLICY_URL = 'http://127.0.0.1:9191/mcp';

const freePort = (): Promise<number> =>
  new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });

interface Run {
  code: number | null;
  out: string;
  err: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<Run> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      rej(new Error(`${args.join(' ')} timed out\n${out}\n${err}`));
    }, timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(timer);
      res({ code, out, err });
    });
  });
}

/** Starts a long-running process and waits for a line matching `ready` on stdout. */
function startProcess(args: string[], env: NodeJS.ProcessEnv, ready: RegExp | null): Promise<{ p: ChildProcess; out: () => string }> {
  return new Promise((res, rej) => {
    const p = spawn(NODE, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    if (!ready) res({ p, out: () => out });
    // Only a readiness wait has a deadline; with no `ready` line the caller watches the process itself.
    const timer = ready
      ? setTimeout(() => {
          p.kill('SIGKILL'); // never leave a half-started process behind
          rej(new Error(`not ready: ${args.join(' ')}\n${out}\n${err}`));
        }, 30_000)
      : undefined;
    p.stdout.on('data', (d) => {
      out += d;
      if (ready?.test(out)) {
        clearTimeout(timer);
        res({ p, out: () => out });
      }
    });
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`exited ${code}: ${args.join(' ')}\n${out}\n${err}`));
    });
  });
}

const stop = (p: ChildProcess | undefined): Promise<void> =>
  new Promise((res) => {
    if (!p || p.exitCode !== null || p.signalCode !== null) return res();
    p.removeAllListeners('exit');
    p.once('exit', () => res());
    p.kill('SIGTERM');
  });

describe('examples (run as the README runs them)', function () {
  this.timeout(120_000);
  let dir: string;
  let sts: StsDouble;
  let vault: VaultDouble;
  let mcpPort: number;
  let broker: ChildProcess | undefined;
  let rs: ChildProcess | undefined;
  let env: NodeJS.ProcessEnv;
  let issuer: string;
  let resourceUrl: string;
  const agents: Record<string, { client_id: string; client_secret: string }> = {};

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordon-examples-'));
    sts = new StsDouble();
    sts.addRole(ROLE);
    const stsUrl = await sts.start();
    // The Vault double holds the tickets MCP server's API key (KV v2), read with a broker token that may read only it.
    vault = new VaultDouble('root-token');
    const vaultUrl = await vault.start();
    vault.setPolicyPaths('broker', [
      { path: 'auth/token/lookup-self', capabilities: ['read'] },
      { path: 'secret/data/tickets/mcp', capabilities: ['read'] },
    ]);
    vault.putKv('tickets/mcp', { api_key: TICKETS_MCP_KEY });
    const vaultToken = vault.mintToken({ policies: ['broker'], addDefault: false, displayName: 'cordon-broker' }).token;
    const port = await freePort();
    const gatewayPort = await freePort();
    mcpPort = await freePort();
    issuer = `http://127.0.0.1:${port}`;
    // The example policies as shipped, but for the MCP server's port: 9191 may be taken on a shared machine.
    const policyDir = join(dir, 'policies');
    cpSync(resolve('examples/policies'), policyDir, { recursive: true });
    const mcpPolicy = join(policyDir, 'example-mcp-reader.yaml');
    const shipped = readFileSync(mcpPolicy, 'utf8');
    assert.ok(shipped.includes(`url: ${MCP_POLICY_URL}`));
    writeFileSync(mcpPolicy, shipped.replace(MCP_POLICY_URL, `http://127.0.0.1:${mcpPort}/mcp`));
    env = {
      PATH: process.env.PATH,
      HOME: dir,
      CORDON_ISSUER: issuer,
      PORT: String(port),
      DATABASE_URL: `sqlite://${join(dir, 'cordon.sqlite')}`,
      CORDON_POLICY_DIR: policyDir,
      CORDON_KEY_DIR: join(dir, 'keys'),
      CORDON_AUDIT_DIR: join(dir, 'audit'),
      CORDON_LOG_LEVEL: 'warn',
      CORDON_SWEEP_INTERVAL: '3600',
      CORDON_GATEWAY_PORT: String(gatewayPort),
      CORDON_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
    };
    // The broker's own AWS identity: the double's test key, as the SDK's usual env chain reads it. No IAM endpoint:
    // issuing never writes IAM (the example's 10-minute tokens bound their keys through the session policy).
    const brokerEnv = {
      ...env,
      AWS_REGION: 'us-east-1',
      AWS_ENDPOINT_URL_STS: stsUrl,
      AWS_ACCESS_KEY_ID: sts.accessKeyId,
      AWS_SECRET_ACCESS_KEY: sts.secretAccessKey,
      VAULT_ADDR: vaultUrl,
      VAULT_TOKEN: vaultToken,
    };
    for (const [name, policy] of [
      ['orchestrator', 'example-orchestrator'],
      ['worker', 'example-worker'],
      ['support', 'example-mcp-reader'],
    ]) {
      const r = await run(NODE, ['bin/cordon.js', 'agent', 'register', name, '--policy', policy, '--json'], env);
      assert.equal(r.code, 0, r.err);
      agents[name] = JSON.parse(r.out);
      assert.match(agents[name].client_secret, /\S{20,}/);
    }
    broker = (await startProcess(['bin/cordon.js', 'serve'], brokerEnv, null)).p;
    broker.stderr!.resume();
    let brokerExit: number | null | undefined;
    broker.once('exit', (c) => (brokerExit = c));
    for (let i = 0; ; i++) {
      const ok = await fetch(`${issuer}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (brokerExit !== undefined) assert.fail(`cordon serve exited with ${brokerExit}`);
      if (i > 400) assert.fail('broker not ready');
      await new Promise((r) => setTimeout(r, 50));
    }
    const rsPort = await freePort();
    rs = (
      await startProcess(
        ['--import', 'tsx', 'examples/resource-server.ts'],
        { ...env, PORT: String(rsPort), POLL_MS: '200' },
        /resource server listening on (\S+)/,
      )
    ).p;
    resourceUrl = `http://127.0.0.1:${rsPort}`;
  });

  after(async () => {
    await stop(rs);
    await stop(broker);
    await sts?.stop();
    await vault?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('orchestrator.ts delegates read-only access to sub-agent.ts, which reads through the protected resource server and is refused a write', async () => {
    const r = await run(NODE, ['--import', 'tsx', 'examples/orchestrator.ts'], {
      ...env,
      CORDON_CLIENT_ID: agents.orchestrator.client_id,
      CORDON_CLIENT_SECRET: agents.orchestrator.client_secret,
      SUB_AGENT: agents.worker.client_id,
      RESOURCE_URL: resourceUrl,
    });
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    assert.match(r.out, /orchestrator: session ses_\S+ open until/);
    assert.match(r.out, /orchestrator: close ticket 41 -> 200 .*closed_by/);
    assert.match(r.out, /orchestrator: delegated tickets:read to agt_\S+ for \d+s/);
    assert.match(
      r.out,
      new RegExp(`sub-agent: read ticket 42 -> 200 "Ticket 42: printer on fire" \\(chain ${agents.orchestrator.client_id} > ${agents.worker.client_id}\\)`),
    );
    assert.match(r.out, /sub-agent: close ticket 42 -> 403 Bearer .*error="insufficient_scope"/);
    assert.match(r.out, /orchestrator: sub-agent exited with 0/);
    assert.match(r.out, /orchestrator: session revoked/);
    assert.doesNotMatch(r.out + r.err, new RegExp(agents.orchestrator.client_secret.replace(/[-/\\^$*+?.()|[\]{}]/g, '\\$&')), 'the secret is never printed');
  });

  it('the broker reports its database and the enabled providers on /readyz, and serves /metrics', async () => {
    const r = await fetch(`${issuer}/readyz`);
    assert.equal(r.status, 200);
    const body = (await r.json()) as { status: string; database: string; providers: Record<string, { ok: boolean; detail: string }> };
    assert.equal(body.status, 'ready');
    assert.equal(body.database, 'ok');
    assert.deepEqual(Object.keys(body.providers).sort(), ['aws-sts', 'vault']);
    for (const [name, p] of Object.entries(body.providers)) assert.equal(p.ok, true, `${name}: ${p.detail}`);
    const m = await (await fetch(`${issuer}/metrics`)).text();
    assert.match(m, /^cordon_issued_total\{event="session.open"\} \d+$/m);
  });

  it('exec-aws.sh runs an AWS SDK client under cordon exec with session-bound STS credentials from the double', async () => {
    const before = sts.requests.length;
    const r = await run('sh', ['examples/exec-aws.sh'], {
      ...env,
      CORDON_CLIENT_ID: agents.orchestrator.client_id,
      CORDON_CLIENT_SECRET: agents.orchestrator.client_secret,
      AWS_REGION: 'us-east-1',
      AWS_ENDPOINT_URL_STS: sts.url,
    });
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    assert.match(r.out, /aws-whoami: arn:aws:sts::123456789012:assumed-role\/agent-reports\/\S+/);
    assert.match(r.out, /aws-whoami: key ASIA\S+ expires \d{4}-/);
    // The broker asked STS for the role with the session's identity; the child then signed with the issued keys.
    const asked = sts.requests.slice(before).map((q) => new URLSearchParams(q.rawBody));
    const assume = asked.find((p) => p.get('Action') === 'AssumeRole');
    assert.ok(assume, 'the broker called AssumeRole');
    assert.equal(assume.get('RoleArn'), ROLE);
    assert.ok(assume.get('SourceIdentity'), 'with the session identity as SourceIdentity');
    assert.match(
      assume.get('Policy') ?? '',
      /"DateLessThan":\{"aws:CurrentTime":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"\}/,
      'keys bounded by the token’s exp in the session policy',
    );
    assert.ok(!asked.some((p) => ['PutRolePolicy', 'DeleteRolePolicy'].includes(p.get('Action') ?? '')), 'no IAM write to issue them');
    assert.ok(
      asked.some((p) => p.get('Action') === 'GetCallerIdentity'),
      'the child called STS with the issued credentials',
    );
  });

  it('the example policies pass cordon policy lint as shipped', async () => {
    const r = await run(NODE, ['bin/cordon.js', 'policy', 'lint', resolve('examples/policies')], env);
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    assert.match(r.out, /no problems.*example-mcp-reader/);
  });

  it('mcp/agent.ts lists and calls the read tools of mcp/tickets-server.ts through the gateway, is refused the rest, and prints its mcp.call rows', async () => {
    const server = await startProcess(
      ['--import', 'tsx', 'examples/mcp/tickets-server.ts'],
      { PATH: env.PATH, PORT: String(mcpPort), TICKETS_API_KEY: TICKETS_MCP_KEY },
      /tickets MCP server listening on \S+/,
    );
    let r: Run;
    try {
      r = await run(NODE, ['--import', 'tsx', 'examples/mcp/agent.ts'], {
        ...env,
        CORDON_CLIENT_ID: agents.support.client_id,
        CORDON_CLIENT_SECRET: agents.support.client_secret,
      });
    } finally {
      await stop(server.p);
    }
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    assert.match(r.out, /agent: session ses_\S+ with scope gw:tickets-mcp\/list_tickets gw:tickets-mcp\/get_ticket/);
    assert.match(r.out, /agent: tools\/list -> 2 tools: list_tickets, get_ticket\n/);
    assert.match(r.out, /tools\/call list_tickets \{"queue":"support-eu"\} -> ok: T-1001 Export to CSV drops the last row \| T-1002 /);
    assert.match(r.out, /tools\/call get_ticket \{"id":"T-1002"\} -> ok: \{"id":"T-1002",.*"status":"open"\}/);
    assert.match(
      r.out,
      /tools\/call list_tickets \{"queue":"billing"\} -> refused \(JSON-RPC error -?\d+\): .*argument queue of tool list_tickets is outside the policy's glob "support-\*"/,
    );
    assert.match(
      r.out,
      /tools\/call close_ticket \{"id":"T-1002","note":"fixed"\} -> refused \(JSON-RPC error -?\d+\): .*tool close_ticket of upstream tickets-mcp is not granted/,
    );
    assert.match(r.out, /agent: audit: 4 mcp\.call rows for session ses_/);
    assert.match(r.out, /#\d+ allow tool=list_tickets args=\["queue"\] sha256=[0-9a-f]{12}… is_error=false/);
    assert.match(r.out, /#\d+ deny tool=close_ticket args=\["id","note"\] sha256=[0-9a-f]{12}… reason=/);
    assert.match(r.out, /agent: session closed/);
    // What reached the server: the two allowed calls, each with the key the gateway injected (a request without it is printed as refused).
    const seen = server.out();
    assert.deepEqual(
      seen.split('\n').filter((l) => l.startsWith('tickets-mcp: ')),
      ['tickets-mcp: list_tickets {"queue":"support-eu"}', 'tickets-mcp: get_ticket {"id":"T-1002"}'],
    );
    assert.doesNotMatch(seen, /close_ticket|billing/, 'the refused calls never reached the server');
    assert.doesNotMatch(r.out + r.err, new RegExp(TICKETS_MCP_KEY), 'the agent never sees the API key');
  });
});
