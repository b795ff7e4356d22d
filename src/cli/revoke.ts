/** `cordon revoke --agent ID | --session SID | --token JTI | --chain JTI`. */
import type { Command } from 'commander';
import { decodeJwt } from 'jose';
import { findAgent } from '../agents/registry.ts';
import { revokeAgent, revokeSession, revokeTokenChain, type RevokeOutcome } from '../revocation/revoke.ts';
import { startBackendCredentials } from '../credentials/sweep.ts';
import { action, leaf, withBroker, type Ctx } from './context.ts';
import { errorLine, printJson, usage } from './output.ts';

const BY = { actor: 'cli', via: 'cli' };

/** A whole JWT pasted where a jti is expected is accepted: its jti is what gets revoked. */
function jtiOf(v: string): string {
  if (/^[\w-]+\.[\w-]+\.[\w-]+$/.test(v)) {
    try {
      const { jti } = decodeJwt(v);
      if (typeof jti === 'string') return jti;
    } catch {
      /* fall through: the well-formedness check will refuse it */
    }
  }
  return v;
}

export function registerRevoke(program: Command, ctx: Ctx): void {
  leaf(program, 'revoke', 'revoke an agent, a session, or a token and everything delegated from it')
    .option('--agent <agent>', 'the agent (client_id or name): its status, live sessions and held tokens, with their subtrees')
    .option('--session <sid>', 'the session and every token in it')
    .option('--token <jti>', 'the token (jti, or the JWT itself) and every token delegated from it')
    .option('--chain <jti>', 'same as --token: the link and everything below it')
    .action(
      action(ctx, async ({ opts, json }) => {
        const given = (['agent', 'session', 'token', 'chain'] as const).filter((k) => opts[k] !== undefined);
        if (given.length !== 1) throw usage('give exactly one of --agent, --session, --token, --chain');
        const target = given[0];
        const value = String(opts[target]);
        const r = await withBroker(ctx, async (b): Promise<RevokeOutcome & { target: string; id: string; backend: boolean }> => {
          // Revocation reaches the backends from here too (Vault leases and tokens, IAM denies) when
          // providers are configured; whatever fails is retried by the running broker's sweeper.
          // A provider that refuses to start (a root VAULT_TOKEN without CORDON_VAULT_ALLOW_ROOT) must not
          // stop the revocation itself: it is recorded, and the backends are left to a broker's sweeper.
          const backends = await startBackendCredentials(b, { sweep: false }).catch((e: unknown) => {
            ctx.io.err(
              `cordon: warning: backend providers are off for this command (${errorLine(e)}); the revocation is recorded and a running broker's sweeper revokes backend credentials\n`,
            );
            return undefined;
          });
          try {
            const out = await revokeTarget(b);
            return { ...out, backend: backends !== undefined && Boolean(b.config.vault || b.config.sts) };
          } finally {
            await backends?.stop();
          }
        });
        async function revokeTarget(b: Parameters<Parameters<typeof withBroker>[1]>[0]): Promise<RevokeOutcome & { target: string; id: string }> {
          if (target === 'agent') {
            const a = await findAgent(b, value);
            return { target, id: a.id, ...(await revokeAgent(b, a.id, BY)) };
          }
          if (target === 'session') return { target, id: value, ...(await revokeSession(b, value, BY)) };
          const jti = jtiOf(value);
          return { target, id: jti, ...(await revokeTokenChain(b, jti, BY)) };
        }
        // Revoking a root token leaves its session open: the agent may still renew in it (session=SID).
        const openSession = r.token?.depth === 0 ? r.token.sid : undefined;
        if (json)
          return void (await printJson(ctx.io, {
            revoked: { [r.target]: r.id },
            sessions: r.sessions,
            tokens: r.tokens,
            ...(openSession ? { session_still_open: openSession } : {}),
          }));
        const n = (k: number, w: string) => `${k} ${w}${k === 1 ? '' : 's'}`;
        const nothing = r.tokens.length === 0 && r.sessions.length === 0 ? ' (already revoked)' : '';
        if (r.target === 'agent')
          await ctx.io.out(
            `revoked agent ${r.id}: ${n(r.sessions.length, 'live session')} (with every token in them), ${n(r.tokens.length, 'token')} delegated to it in other sessions (with their subtrees)\n`,
          );
        else if (r.target === 'session') await ctx.io.out(`revoked session ${r.id} and every token in it${nothing}\n`);
        else await ctx.io.out(`revoked token ${r.id} and its delegation subtree: ${n(r.tokens.length, 'token')}${nothing}\n`);
        if (openSession)
          await ctx.io.out(
            `This is a root token: session ${openSession} itself stays open, and its agent can still ask for new tokens in it until the session ends. \`cordon revoke --session ${openSession}\` ends it.\n`,
          );
        if (r.sessions.length || r.tokens.length) {
          await ctx.io.out(
            r.backend
              ? 'Backend credentials were revoked with them (Vault tokens and leases; STS sessions denied where the policy allows, otherwise listed by `cordon status` until they expire).\n'
              : 'No backend provider is configured here; a running broker with providers cleans up their backend credentials on its next sweep.\n',
          );
        }
      }),
    );
}
