/** `cordon policy lint [DIR]` and `cordon policy list`. */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { formatProblem, lintPolicyDir } from '../policy/lint.ts';
import { loadPolicies } from '../policy/load.ts';
import { formatDuration } from '../policy/duration.ts';
import type { Policy } from '../policy/types.ts';
import { action, config, leaf, type Ctx } from './context.ts';
import { printJson, table } from './output.ts';

export function policyJson(p: Policy): Record<string, unknown> {
  return {
    name: p.name,
    description: p.description,
    file: p.file,
    token_ttl: p.tokenTtl,
    session_ttl: p.sessionTtl,
    scopes: p.scopes,
    audiences: p.audiences,
    delegation: { max_depth: p.delegation.maxDepth, scopes: p.delegation.scopes },
    credentials: Object.fromEntries(Object.entries(p.credentials).map(([n, c]) => [n, { provider: c.provider, ttl: c.ttl }])),
    require_dpop: p.requireDpop,
    federation: p.federation.map((f) => ({ issuer: f.issuer, claim: f.claim, match: f.match })),
  };
}

export function registerPolicy(program: Command, ctx: Ctx): void {
  const policy = program.command('policy').description('check and list policies');

  leaf(policy, 'lint [dir]', 'check policy files; prints file:line:col: message per problem (and per warning) and exits 1 if there is any problem').action(
    action(ctx, async ({ args: [dirArg], json }) => {
      // With a directory given, the rest of the configuration is irrelevant and not read.
      const dir = dirArg ?? config().policyDir;
      const { policies, problems, warnings } = await lintPolicyDir(dir);
      if (json) {
        await printJson(ctx.io, {
          dir: resolve(dir),
          ok: problems.length === 0,
          policies: policies.map((p) => p.name),
          problems: [...problems, ...warnings].map((p) => ({
            file: p.file,
            line: p.line,
            column: p.column,
            severity: p.severity ?? 'error',
            message: p.message,
          })),
        });
        return problems.length ? 1 : 0;
      }
      // Warnings never fail lint: the broker loads the set and logs them.
      await ctx.io.out([...problems, ...warnings].map((p) => `${formatProblem(p)}\n`).join(''));
      const warned = warnings.length ? `${warnings.length} warning${warnings.length > 1 ? 's' : ''}` : '';
      if (problems.length) {
        ctx.io.err(
          `cordon: ${problems.length} problem${problems.length > 1 ? 's' : ''}${warned ? ` (and ${warned})` : ''} in ${dir}; the broker will not start until they are fixed\n`,
        );
        return 1;
      }
      await ctx.io.out(
        `${dir}: ${policies.length} polic${policies.length === 1 ? 'y' : 'ies'}, no problems${warned ? `, ${warned}` : ''}${policies.length ? ` (${policies.map((p) => p.name).join(', ')})` : ''}\n`,
      );
    }),
  );

  leaf(policy, 'list', 'list the loaded policies with their limits').action(
    action(ctx, async ({ json }) => {
      const set = await loadPolicies(config().policyDir);
      const list = set.list();
      if (json) return void (await printJson(ctx.io, list.map(policyJson)));
      if (!list.length) return void ctx.io.out('No policies.\n');
      await ctx.io.out(
        table(
          ['NAME', 'TOKEN_TTL', 'SESSION_TTL', 'SCOPES', 'DELEGATES', 'CREDENTIALS'],
          list.map((p) => [
            p.name,
            formatDuration(p.tokenTtl),
            formatDuration(p.sessionTtl),
            p.scopes.join(' '),
            p.delegation.maxDepth > 0 ? `depth ${p.delegation.maxDepth}: ${p.delegation.scopes.join(' ') || '(nothing)'}` : 'no',
            Object.entries(p.credentials)
              .map(([n, c]) => `${n} (${c.provider})`)
              .join(', '),
          ]),
        ),
      );
    }),
  );
}
