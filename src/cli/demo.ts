/**
 * `cordon demo`: the whole story against a throw-away broker and gateway (temp SQLite, temp keys,
 * the repository's example policies plus the demo's own for the gateway act) over real HTTP, in a
 * few seconds, cleaning up after itself.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { decodeJwt } from 'jose';
import pino from 'pino';
import { loadConfig } from '../config/index.ts';
import type { RunningBroker } from '../runtime.ts';
import { registerAgent } from '../agents/registry.ts';
import { revokeSession } from '../revocation/revoke.ts';
import { verifyAudit } from '../audit/verify.ts';
import { auditRows } from '../store/audit.ts';
import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS } from '../tokens/claims.ts';
import { action, leaf, type Ctx } from './context.ts';
import { agentNames, auditJson, auditTable } from './audit.ts';
import { CliError, printJson, style } from './output.ts';
import { attachDemoVault, DemoApi, gatewayAct, ticketBotPolicy, type DemoScript } from './demo-gateway.ts';

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });

const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

interface HttpAnswer {
  status: number;
  body: any;
}

async function post(url: string, form: Record<string, string>, auth: string): Promise<HttpAnswer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth },
    body: new URLSearchParams(form).toString(),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* keep text */
  }
  return { status: res.status, body };
}

/** The claims worth showing, in reading order. */
const pickClaims = (jwt: string): Record<string, unknown> => {
  const c = decodeJwt(jwt) as Record<string, unknown>;
  const ttl = typeof c.exp === 'number' && typeof c.iat === 'number' ? c.exp - c.iat : undefined;
  const keys = ['iss', 'sub', 'client_id', 'act', 'scope', 'sid', 'task', 'cordon_depth', 'exp', 'jti'];
  return { ...Object.fromEntries(keys.filter((k) => c[k] !== undefined).map((k) => [k, c[k]])), ...(ttl !== undefined ? { 'exp - iat': `${ttl}s` } : {}) };
};

export function registerDemo(program: Command, ctx: Ctx): void {
  leaf(program, 'demo', 'run the whole story against a throw-away broker: sessions, delegation, refusals, cascade revocation, the gateway, audit').action(
    action(ctx, async ({ json }) => {
      const started = Date.now();
      const io = ctx.io;
      const st = style(io);
      const steps: Array<Record<string, unknown>> = [];
      let n = 0;
      const say = (s = '') => {
        if (!json) void io.out(`${s}\n`);
      };
      const step = (title: string) => {
        n += 1;
        steps.push({ step: n, title });
        say(`\n${st.bold(`── ${n}. ${title} ${'─'.repeat(Math.max(3, 60 - title.length))}`)}`);
      };
      const record = (k: string, v: unknown) => {
        steps[steps.length - 1][k] = v;
      };
      const show = (v: unknown) => say(JSON.stringify(v, null, 2).replace(/^/gm, '   '));
      const cmd = (s: string) => say(st.dim(`   $ ${s}`));
      const expect = (cond: boolean, what: string) => {
        if (!cond) throw new CliError(`demo step ${n} went wrong: ${what}`);
      };

      const dir = mkdtempSync(join(tmpdir(), 'cordon-demo-'));
      let r: RunningBroker | undefined;
      const api = new DemoApi();
      try {
        const port = await freePort();
        const shipped = shippedPolicies();
        // The shipped personas, plus the gateway act's policy naming the demo's own API as an upstream.
        await api.start();
        const policyDir = join(dir, 'policies');
        mkdirSync(policyDir);
        for (const f of readdirSync(shipped)) if (/\.ya?ml$/.test(f)) copyFileSync(join(shipped, f), join(policyDir, f));
        writeFileSync(join(policyDir, 'ticket-bot.yaml'), ticketBotPolicy(api.url));
        const config = loadConfig({
          CORDON_ISSUER: `http://127.0.0.1:${port}`,
          HOST: '127.0.0.1',
          PORT: String(port),
          DATABASE_URL: `sqlite://${join(dir, 'cordon.sqlite')}`,
          CORDON_POLICY_DIR: policyDir,
          CORDON_KEY_DIR: join(dir, 'keys'),
          CORDON_AUDIT_DIR: join(dir, 'audit'),
          CORDON_LOG_LEVEL: 'silent',
        });
        const { startBroker } = await import('../runtime.ts');
        // The gateway on a free port: the demo must not collide with a broker already serving on 8081.
        r = await startBroker(config, { port, gatewayPort: 0, log: pino({ level: 'silent' }) });
        const b = r.b;
        const url = config.issuer;
        const gateway = r.gateway!.url;
        const vault = attachDemoVault(b);
        say(st.bold('Cordon demo'));
        say(`A throw-away broker at ${url} and its gateway at ${gateway}: SQLite and keys in ${dir}, policies from ${shipped} (and the demo's ticket-bot).`);
        say('Every call below is real HTTP against it (RFC 6749 client credentials, RFC 8693 token exchange, RFC 7662/7009).');

        // 1
        step('Register two agents');
        const planner = await registerAgent(b, { name: 'research-planner', policy: 'research-planner', auth: 'secret', actor: 'demo' });
        const reader = await registerAgent(b, { name: 'doc-reader', policy: 'doc-reader', auth: 'secret', actor: 'demo' });
        const pAuth = basic(planner.agent.id, planner.clientSecret!);
        const rAuth = basic(reader.agent.id, reader.clientSecret!);
        cmd('cordon agent register research-planner --policy research-planner');
        say(`   research-planner  client_id ${planner.agent.id}  (orchestrator: may hand down web:search docs:read tickets:read, depth 2)`);
        cmd('cordon agent register doc-reader --policy doc-reader');
        say(`   doc-reader        client_id ${reader.agent.id}  (sub-agent: docs:read web:search tickets:read, 5m tokens, cannot delegate)`);
        say('   Each gets a client secret, shown once and stored as a keyed hash.');
        record('agents', { 'research-planner': planner.agent.id, 'doc-reader': reader.agent.id });

        // 2
        step('The planner opens a session for one task');
        const scope = 'web:search docs:read docs:write tickets:read';
        cmd(`POST /token grant_type=client_credentials scope="${scope}" task=q3-market-research  (Basic auth)`);
        const open = await post(`${url}/token`, { grant_type: 'client_credentials', scope, task: 'q3-market-research' }, pAuth);
        expect(open.status === 200, `session start answered ${open.status} ${JSON.stringify(open.body)}`);
        const pToken: string = open.body.access_token;
        const sid: string = open.body.sid;
        show({ token_type: open.body.token_type, expires_in: open.body.expires_in, scope: open.body.scope, sid, access_token: `${pToken.slice(0, 24)}…` });
        record('response', { status: open.status, expires_in: open.body.expires_in, scope: open.body.scope, sid });

        // 3
        step("What the planner's token says");
        const pClaims = pickClaims(pToken);
        show(pClaims);
        say('   Short-lived (token_ttl 15m), bound to one session (sid) and one task, usable only at the broker.');
        record('claims', pClaims);

        // 4
        step('A scope outside the policy is refused');
        cmd('POST /token grant_type=client_credentials scope="payments:write"');
        const wide = await post(`${url}/token`, { grant_type: 'client_credentials', scope: 'payments:write', task: 'q3-market-research' }, pAuth);
        expect(wide.status >= 400 && wide.body?.error === 'invalid_scope', `expected invalid_scope, got ${wide.status} ${JSON.stringify(wide.body)}`);
        say(`   HTTP ${wide.status}`);
        show(wide.body);
        record('refused', { status: wide.status, ...wide.body });

        // 5
        step('The planner delegates a narrower scope to doc-reader');
        cmd(`POST /token grant_type=token-exchange subject_token=<planner token> requested_actor=${reader.agent.id} scope="docs:read web:search"`);
        const del = await post(
          `${url}/token`,
          {
            grant_type: GRANT_TOKEN_EXCHANGE,
            subject_token: pToken,
            subject_token_type: TOKEN_TYPE_ACCESS,
            requested_actor: reader.agent.id,
            scope: 'docs:read web:search',
          },
          pAuth,
        );
        expect(del.status === 200, `delegation answered ${del.status} ${JSON.stringify(del.body)}`);
        const rToken: string = del.body.access_token;
        const rClaims = pickClaims(rToken);
        show(rClaims);
        say('   act.sub is the current holder (doc-reader); the nested act is the planner. Same sid; depth 1;');
        say("   the reader's token_ttl (5m) caps it, and it can never outlive the planner's token.");
        record('claims', rClaims);

        // 6
        step('Escalation is refused');
        cmd('POST /token grant_type=token-exchange … requested_actor=doc-reader scope="docs:write"   (planner hands down docs:write)');
        const esc1 = await post(
          `${url}/token`,
          {
            grant_type: GRANT_TOKEN_EXCHANGE,
            subject_token: pToken,
            subject_token_type: TOKEN_TYPE_ACCESS,
            requested_actor: reader.agent.id,
            scope: 'docs:write',
          },
          pAuth,
        );
        expect(esc1.status >= 400, `escalation was allowed: ${JSON.stringify(esc1.body)}`);
        say(`   HTTP ${esc1.status}`);
        show(esc1.body);
        cmd('POST /token grant_type=client_credentials scope="docs:write"   (doc-reader asks for itself)');
        const esc2 = await post(`${url}/token`, { grant_type: 'client_credentials', scope: 'docs:write' }, rAuth);
        expect(esc2.status >= 400, `escalation was allowed: ${JSON.stringify(esc2.body)}`);
        say(`   HTTP ${esc2.status}`);
        show(esc2.body);
        record('refused', [esc1.body, esc2.body]);

        // 7
        step("Revoke the planner's token: everything below it goes too");
        const before = await post(`${url}/introspect`, { token: rToken }, rAuth);
        say(`   introspect reader token before:  active=${before.body?.active}`);
        cmd('POST /revoke token=<planner token>   (RFC 7009, by the holder)');
        const rev = await post(`${url}/revoke`, { token: pToken }, pAuth);
        expect(rev.status === 200, `revoke answered ${rev.status} ${JSON.stringify(rev.body)}`);
        const after = await post(`${url}/introspect`, { token: rToken }, rAuth);
        say(`   HTTP ${rev.status}; introspect reader token after:`);
        show(after.body);
        expect(before.body?.active === true && after.body?.active === false, 'the cascade did not reach the delegated token');
        record('introspection', { before: before.body?.active, after: after.body });

        // 8
        step('Revoke the whole session');
        cmd(`POST /token grant_type=client_credentials session=${sid} scope="docs:read"   (the planner renews inside its live session)`);
        const renew = await post(`${url}/token`, { grant_type: 'client_credentials', scope: 'docs:read', session: sid }, pAuth);
        expect(renew.status === 200, `renewal answered ${renew.status} ${JSON.stringify(renew.body)}`);
        say(`   new token in ${renew.body.sid}, active=${(await post(`${url}/introspect`, { token: renew.body.access_token }, pAuth)).body?.active}`);
        cmd(`cordon revoke --session ${sid}`);
        await revokeSession(b, sid, { actor: 'cli', via: 'cli' });
        const dead = await post(`${url}/introspect`, { token: renew.body.access_token }, pAuth);
        say(`   introspect the renewed token: active=${dead.body?.active}`);
        const again = await post(`${url}/token`, { grant_type: 'client_credentials', scope: 'docs:read', session: sid }, pAuth);
        say(`   renewing in the session again: HTTP ${again.status} ${JSON.stringify(again.body)}`);
        expect(dead.body?.active === false && again.status >= 400, 'the session revocation did not hold');
        record('after', { introspection: dead.body, renewal: again.body });

        // 9, 10
        const script: DemoScript = { step, say, cmd, show, expect, record, out: async (s) => void (json ? undefined : await io.out(s)) };
        await gatewayAct(script, b, { issuer: url, gateway, api, key: vault.key });

        // 11
        step('The audit log: every grant, every call and every refusal, hash-chained');
        cmd('cordon audit verify');
        const v = await verifyAudit(b.db);
        expect(v.ok, v.ok ? '' : `audit chain broken at row ${v.brokenSeq}`);
        if (v.ok) say(`   audit chain intact: ${v.rows} rows, head ${v.head.slice(0, 16)}…`);
        cmd('cordon audit tail -n 12');
        const tail = await auditRows.tail(b.db, 12);
        if (!json)
          await io.out(
            `${auditTable(tail, await agentNames(b.db))
              .trimEnd()
              .replace(/^/gm, '   ')}\n`,
          );
        record('verify', v);
        record('tail', tail.map(auditJson));

        const secs = ((Date.now() - started) / 1000).toFixed(1);
        say(`\nDone in ${secs}s. The temporary broker and its files are removed.`);
        if (json) await printJson(io, { ok: true, issuer: url, gateway, steps });
      } finally {
        await r?.stop().catch(() => {});
        await api.stop().catch(() => {});
        rmSync(dir, { recursive: true, force: true });
      }
    }),
  );
}

/** The personas shipped in the package's policies/ (found from here, whether running from src/ or the compiled dist/src/). */
function shippedPolicies(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'policies'))) return join(dir, 'policies');
  }
  throw new CliError('the shipped policies/ directory was not found beside the package');
}
