/** `cordon agent register|list|show|disable|enable|rotate|bootstrap`. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { registerAgent as register, findAgent, setAgentEnabled, rotateAgentCredential } from '../agents/registry.ts';
import { agents, type Agent } from '../store/agents.ts';
import { sessions } from '../store/sessions.ts';
import { tokens } from '../store/tokens.ts';
import { parseDuration } from '../policy/duration.ts';
import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_BOOTSTRAP } from '../protocol/constants.ts';
import { action, leaf, withBroker, type Ctx } from './context.ts';
import { CliError, fmtTime, fmtWhen, iso, kv, printJson, table, usage } from './output.ts';

/** The public view of an agent: never the secret hash. */
export function agentJson(a: Agent): Record<string, unknown> {
  return {
    client_id: a.id,
    name: a.name,
    policy: a.policy,
    auth_method: a.authMethod,
    status: a.status,
    created_at: iso(a.createdAt),
    updated_at: iso(a.updatedAt),
    ...(a.jwks ? { jwks_kids: a.jwks.keys.map((k) => (typeof k.kid === 'string' ? k.kid : null)) } : {}),
  };
}

function readJwks(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read --jwks ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`--jwks ${file} is not JSON (expected {"keys":[…]} with public keys)`);
  }
}

const secretNotice = (secret: string): string =>
  `\nclient_secret  ${secret}\n\nThe secret is shown once and stored only as a keyed hash. Keep it in the agent's secret store.\n`;

export function registerAgent(program: Command, ctx: Ctx): void {
  const agent = program.command('agent').description('register and manage agents (OAuth clients)');

  leaf(agent, 'register <name>', 'register an agent bound to one policy; prints its client_id and (once) its secret')
    .requiredOption('--policy <policy>', 'the policy the agent is bound to')
    .option('--auth <method>', 'secret or private_key_jwt', 'secret')
    .option('--jwks <file>', 'public JWKS file (required with --auth private_key_jwt)')
    .action(
      action(ctx, async ({ args: [name], opts, json }) => {
        if (opts.auth !== 'secret' && opts.auth !== 'private_key_jwt') throw usage(`--auth must be secret or private_key_jwt, got "${opts.auth}"`);
        if (opts.auth === 'private_key_jwt' && !opts.jwks) throw usage('--auth private_key_jwt needs --jwks FILE with the public keys');
        if (opts.auth === 'secret' && opts.jwks) throw usage('--jwks goes with --auth private_key_jwt');
        const jwks = opts.jwks ? readJwks(opts.jwks) : undefined;
        const r = await withBroker(ctx, (b) => register(b, { name, policy: opts.policy, auth: opts.auth, jwks, actor: 'cli' }), { create: true });
        if (json) return void (await printJson(ctx.io, { ...agentJson(r.agent), ...(r.clientSecret ? { client_secret: r.clientSecret } : {}) }));
        await ctx.io.out(
          kv([
            ['client_id', r.agent.id],
            ['name', r.agent.name],
            ['policy', r.agent.policy],
            ['auth', r.agent.authMethod],
          ]),
        );
        if (r.clientSecret) await ctx.io.out(secretNotice(r.clientSecret));
      }),
    );

  leaf(agent, 'list', 'list agents with their policy, status and live sessions').action(
    action(ctx, async ({ json }) => {
      const rows = await withBroker(ctx, async (b) => {
        const now = b.clock.now();
        const [all, liveS, liveT] = await Promise.all([agents.list(b.db), sessions.countLive(b.db, now), tokens.countLive(b.db, now)]);
        const s = new Map(liveS.map((x) => [x.agentId, x.count]));
        const t = new Map(liveT.map((x) => [x.clientId, x.count]));
        return all.map((a) => ({ a, sessions: s.get(a.id) ?? 0, tokens: t.get(a.id) ?? 0, policyLoaded: Boolean(b.policies.get(a.policy)) }));
      });
      if (json)
        return void (await printJson(
          ctx.io,
          rows.map((r) => ({ ...agentJson(r.a), live_sessions: r.sessions, live_tokens: r.tokens })),
        ));
      if (!rows.length) return void ctx.io.out('No agents. Register one with: cordon agent register NAME --policy POLICY\n');
      await ctx.io.out(
        table(
          ['CLIENT_ID', 'NAME', 'POLICY', 'AUTH', 'STATUS', 'SESSIONS', 'TOKENS', 'CREATED'],
          rows.map((r) => [
            r.a.id,
            r.a.name,
            r.policyLoaded ? r.a.policy : `${r.a.policy} (not loaded)`,
            r.a.authMethod,
            r.a.status,
            r.sessions,
            r.tokens,
            fmtTime(r.a.createdAt),
          ]),
        ),
      );
    }),
  );

  leaf(agent, 'show <agent>', 'show one agent (by client_id or name)').action(
    action(ctx, async ({ args: [id], json }) => {
      const r = await withBroker(ctx, async (b) => {
        const a = await findAgent(b, id);
        const now = b.clock.now();
        const live = await sessions.list(b.db, { agentId: a.id, liveAt: now, limit: 20 });
        const liveTokens = (await tokens.countLive(b.db, now)).find((x) => x.clientId === a.id)?.count ?? 0;
        const policy = b.policies.get(a.policy);
        return { a, live, liveTokens, policy, now };
      });
      if (json) {
        return void (await printJson(ctx.io, {
          ...agentJson(r.a),
          policy_loaded: Boolean(r.policy),
          scopes: r.policy?.scopes ?? null,
          live_tokens: r.liveTokens,
          live_sessions: r.live.map((s) => ({ sid: s.sid, task: s.task, scope: s.scope, created_at: iso(s.createdAt), expires_at: iso(s.expiresAt) })),
        }));
      }
      await ctx.io.out(
        kv([
          ['client_id', r.a.id],
          ['name', r.a.name],
          ['policy', r.policy ? r.a.policy : `${r.a.policy} (not loaded: the agent cannot act)`],
          ['scopes', r.policy?.scopes.join(' ')],
          [
            'may delegate',
            r.policy
              ? r.policy.delegation.maxDepth > 0
                ? `${r.policy.delegation.scopes.join(' ') || '(nothing)'} (max_depth ${r.policy.delegation.maxDepth})`
                : 'no'
              : undefined,
          ],
          ['auth', r.a.authMethod],
          ...(r.a.jwks ? [['jwks kids', r.a.jwks.keys.map((k) => String(k.kid ?? '(none)')).join(' ')] as [string, string]] : []),
          ['status', r.a.status],
          ['created', fmtTime(r.a.createdAt)],
          ['updated', fmtTime(r.a.updatedAt)],
          ['live tokens', r.liveTokens],
          ['live sessions', r.live.length],
        ]),
      );
      if (r.live.length) {
        await ctx.io.out('\n');
        await ctx.io.out(
          table(
            ['SID', 'TASK', 'SCOPE', 'EXPIRES'],
            r.live.map((s) => [s.sid, s.task, s.scope, fmtWhen(s.expiresAt, r.now)]),
          ),
        );
      }
    }),
  );

  for (const [verb, enabled] of [
    ['disable', false],
    ['enable', true],
  ] as const) {
    leaf(
      agent,
      `${verb} <agent>`,
      enabled ? 'allow the agent to authenticate again' : 'stop the agent from authenticating; its live tokens stop introspecting as active',
    ).action(
      action(ctx, async ({ args: [id], json }) => {
        const a = await withBroker(ctx, (b) => setAgentEnabled(b, id, enabled, 'cli'));
        if (json) return void (await printJson(ctx.io, agentJson(a)));
        await ctx.io.out(`agent ${a.name} (${a.id}) ${enabled ? 'enabled' : 'disabled'}\n`);
      }),
    );
  }

  leaf(agent, 'rotate <agent>', 'issue a new client secret (or replace the public keys); the old one stops working at once')
    .option('--jwks <file>', 'new public JWKS file, for private_key_jwt agents')
    .action(
      action(ctx, async ({ args: [id], opts, json }) => {
        const jwks = opts.jwks ? readJwks(opts.jwks) : undefined;
        const r = await withBroker(ctx, (b) => rotateAgentCredential(b, id, jwks, 'cli'));
        if (json) return void (await printJson(ctx.io, { ...agentJson(r.agent), ...(r.clientSecret ? { client_secret: r.clientSecret } : {}) }));
        await ctx.io.out(
          `agent ${r.agent.name} (${r.agent.id}): ${r.clientSecret ? 'new client secret issued' : 'public keys replaced'}; the old credential no longer authenticates\n`,
        );
        if (r.clientSecret) await ctx.io.out(secretNotice(r.clientSecret));
      }),
    );

  leaf(agent, 'bootstrap <agent>', 'issue a one-time bootstrap token the agent exchanges for a session (no static secret)')
    .option('--ttl <duration>', 'how long the bootstrap token is valid (e.g. 5m)', '5m')
    .action(
      action(ctx, async ({ args: [id], opts, json }) => {
        const ttlSec = parseDuration(opts.ttl);
        const issue = await loadBootstrap();
        const r = await withBroker(ctx, (b) => issue(b, id, { ttlSec, actor: 'cli' }));
        if (json)
          return void (await printJson(ctx.io, { id: r.id, agent: id, token: r.token, token_type: TOKEN_TYPE_BOOTSTRAP, expires_at: iso(r.expiresAt) }));
        await ctx.io.out(
          kv([
            ['bootstrap id', r.id],
            ['agent', id],
            ['expires', fmtTime(r.expiresAt)],
            ['token', r.token],
          ]),
        );
        await ctx.io.out(
          '\nShown once, usable once. The agent exchanges it at the token endpoint with\n' +
            `grant_type=${GRANT_TOKEN_EXCHANGE}, subject_token_type=${TOKEN_TYPE_BOOTSTRAP}.\n`,
        );
      }),
    );
}

/** Bootstrap tokens are loaded on use, so the other agent commands do not load them. */
async function loadBootstrap(): Promise<typeof import('../sessions/bootstrap.ts').issueBootstrapToken> {
  return (await import('../sessions/bootstrap.ts')).issueBootstrapToken;
}
