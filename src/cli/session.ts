/** `cordon session list|show`: sessions and their delegation trees, built from the tokens table (parent_jti). */
import type { Command } from 'commander';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { isWellFormedId } from '../ids.ts';
import { findAgent } from '../agents/registry.ts';
import { agents, type Agent } from '../store/agents.ts';
import { sessions, type Session } from '../store/sessions.ts';
import { credentials } from '../store/credentials.ts';
import { tokens, type TokenRecord } from '../store/tokens.ts';
import { action, leaf, withBroker, type Ctx } from './context.ts';
import { clip, fmtRel, fmtTime, fmtWhen, iso, kv, printJson, style, table, usage } from './output.ts';

export type RecordState = 'active' | 'revoked' | 'expired' | 'inactive';

export const sessionState = (s: Session, now: number): RecordState => (s.revokedAt !== null ? 'revoked' : s.expiresAt <= now ? 'expired' : 'active');

/** A token is only as alive as its session and its holder. `inactive`: the holder is disabled. */
export function tokenState(t: TokenRecord, s: Session, holder: Agent | undefined, now: number): RecordState {
  if (t.revokedAt !== null || s.revokedAt !== null) return 'revoked';
  if (t.expiresAt <= now || s.expiresAt <= now) return 'expired';
  if (!holder || holder.status !== 'active') return 'inactive';
  return 'active';
}

export interface TreeNode {
  jti: string;
  holder: { client_id: string; name: string | null };
  scope: string;
  depth: number;
  audience: string[];
  issued_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  state: RecordState;
  dpop_bound: boolean;
  children: TreeNode[];
}

/** The forest of a session's tokens: root tokens (depth 0, or whose parent is not in the session) and what was delegated from each. */
export function buildTree(list: TokenRecord[], s: Session, byId: Map<string, Agent>, now: number): TreeNode[] {
  const nodes = new Map<string, TreeNode>();
  for (const t of list) {
    const holder = byId.get(t.clientId);
    nodes.set(t.jti, {
      jti: t.jti,
      holder: { client_id: t.clientId, name: holder?.name ?? null },
      scope: t.scope,
      depth: t.depth,
      audience: t.audience,
      issued_at: iso(t.issuedAt),
      expires_at: iso(t.expiresAt),
      revoked_at: iso(t.revokedAt ?? (s.revokedAt !== null && s.revokedAt < t.expiresAt ? s.revokedAt : null)),
      state: tokenState(t, s, holder, now),
      dpop_bound: t.cnfJkt !== null,
      children: [],
    });
  }
  const roots: TreeNode[] = [];
  for (const t of list) {
    const n = nodes.get(t.jti)!;
    const parent = t.parentJti ? nodes.get(t.parentJti) : undefined;
    if (parent && parent !== n) parent.children.push(n);
    else roots.push(n);
  }
  return roots;
}

function renderTree(roots: TreeNode[], now: number, io: Ctx['io']): string {
  const st = style(io);
  const paint = (s: RecordState) => (s === 'active' ? st.green(s) : s === 'revoked' ? st.red(s) : st.dim(s));
  const lines: string[] = [];
  const walk = (n: TreeNode, prefix: string, last: boolean, top: boolean) => {
    const branch = top ? '' : last ? '└─ ' : '├─ ';
    const exp = Date.parse(n.expires_at!);
    const when = n.state === 'revoked' && n.revoked_at ? `revoked ${fmtTime(Date.parse(n.revoked_at))}` : `expires ${fmtTime(exp)} (${fmtRel(exp, now)})`;
    lines.push(
      `${prefix}${branch}${st.bold(n.holder.name ?? n.holder.client_id)}  [${n.scope}]  depth ${n.depth}  ${paint(n.state)}  ${when}${n.dpop_bound ? '  dpop' : ''}  ${st.dim(`jti ${n.jti}`)}`,
    );
    const childPrefix = top ? prefix : prefix + (last ? '   ' : '│  ');
    n.children.forEach((c, i) => walk(c, childPrefix, i === n.children.length - 1, false));
  };
  roots.forEach((r, i) => {
    if (i > 0) lines.push('');
    walk(r, '  ', true, true);
  });
  return lines.length ? `${lines.join('\n')}\n` : '  (no tokens)\n';
}

export function sessionJson(s: Session, byId: Map<string, Agent>, now: number): Record<string, unknown> {
  return {
    sid: s.sid,
    agent: { client_id: s.agentId, name: byId.get(s.agentId)?.name ?? null },
    task: s.task,
    scope: s.scope,
    audience: s.audience,
    origin: s.origin,
    subject: s.subject,
    state: sessionState(s, now),
    created_at: iso(s.createdAt),
    expires_at: iso(s.expiresAt),
    revoked_at: iso(s.revokedAt),
    revoke_reason: s.revokeReason,
  };
}

async function agentMap(b: Broker): Promise<Map<string, Agent>> {
  return new Map((await agents.list(b.db)).map((a) => [a.id, a]));
}

export function registerSession(program: Command, ctx: Ctx): void {
  const session = program.command('session').description('inspect sessions and their delegation trees');

  leaf(session, 'list', 'list recent sessions (newest first)')
    .option('--agent <agent>', 'only sessions opened by this agent (client_id or name)')
    .option('--live', 'only sessions that are neither revoked nor expired')
    .option('-n, --limit <n>', 'at most this many', '100')
    .action(
      action(ctx, async ({ opts, json }) => {
        if (!/^\d{1,6}$/.test(opts.limit) || Number(opts.limit) < 1) throw usage(`--limit must be a whole number from 1, got "${opts.limit}"`);
        const r = await withBroker(ctx, async (b) => {
          const now = b.clock.now();
          const agentId = opts.agent ? (await findAgent(b, opts.agent)).id : undefined;
          const list = await sessions.list(b.db, { agentId, liveAt: opts.live ? now : undefined, limit: Number(opts.limit) });
          const counts = await tokens.countBySids(
            b.db,
            list.map((s) => s.sid),
          );
          return { list, byId: await agentMap(b), now, counts };
        });
        if (json)
          return void (await printJson(
            ctx.io,
            r.list.map((s) => ({ ...sessionJson(s, r.byId, r.now), tokens: r.counts.get(s.sid) ?? 0 })),
          ));
        if (!r.list.length) return void ctx.io.out(opts.live ? 'No live sessions.\n' : 'No sessions.\n');
        await ctx.io.out(
          table(
            ['SID', 'AGENT', 'TASK', 'STATE', 'TOKENS', 'SCOPE', 'CREATED', 'EXPIRES'],
            r.list.map((s) => [
              s.sid,
              r.byId.get(s.agentId)?.name ?? s.agentId,
              clip(s.task, 30),
              sessionState(s, r.now),
              r.counts.get(s.sid) ?? 0,
              clip(s.scope, 50),
              fmtTime(s.createdAt),
              fmtRel(s.expiresAt, r.now),
            ]),
          ),
        );
      }),
    );

  leaf(session, 'show <sid>', 'show a session and its delegation tree').action(
    action(ctx, async ({ args: [sid], json }) => {
      if (!isWellFormedId(sid))
        throw new CordonError('invalid_request', 'session id is malformed (letters, digits, _ and - only)', { reason: 'sid_malformed' });
      const r = await withBroker(ctx, async (b) => {
        const s = await sessions.get(b.db, sid);
        if (!s) throw new CordonError('not_found', `no session ${sid}`, { reason: 'session_unknown' });
        const now = b.clock.now();
        const byId = await agentMap(b);
        const list = await tokens.bySession(b.db, sid);
        const creds = await credentials.bySession(b.db, sid);
        return { s, byId, now, tree: buildTree(list, s, byId, now), count: list.length, creds };
      });
      const credJson = r.creds.map((c) => ({
        id: c.id,
        name: c.name,
        provider: c.provider,
        holder: c.agentId,
        jti: c.jti,
        state: c.state,
        created_at: iso(c.createdAt),
        expires_at: iso(c.expiresAt),
        revoked_at: iso(c.revokedAt),
      }));
      if (json) return void (await printJson(ctx.io, { session: sessionJson(r.s, r.byId, r.now), tokens: r.count, tree: r.tree, credentials: credJson }));
      const st = style(ctx.io);
      const state = sessionState(r.s, r.now);
      await ctx.io.out(`${st.bold(`Session ${r.s.sid}`)}\n`);
      await ctx.io.out(
        kv(
          [
            ['agent', `${r.byId.get(r.s.agentId)?.name ?? '?'} (${r.s.agentId})`],
            ['task', r.s.task],
            ['scope', r.s.scope],
            ['audience', r.s.audience.join(' ')],
            ['origin', r.s.origin],
            ['subject', r.s.subject],
            ['state', state === 'revoked' ? `revoked ${fmtTime(r.s.revokedAt)}${r.s.revokeReason ? ` (${r.s.revokeReason})` : ''}` : state],
            ['created', fmtTime(r.s.createdAt)],
            ['expires', fmtWhen(r.s.expiresAt, r.now)],
          ],
          '  ',
        ),
      );
      await ctx.io.out(`\n${st.bold(`Delegation tree (${r.count} token${r.count === 1 ? '' : 's'})`)}\n`);
      await ctx.io.out(renderTree(r.tree, r.now, ctx.io));
      if (credJson.length) {
        await ctx.io.out(`\n${st.bold('Backend credentials')}\n`);
        await ctx.io.out(
          table(
            ['NAME', 'PROVIDER', 'HOLDER', 'STATE', 'EXPIRES'],
            credJson.map((c) => [c.name, c.provider, r.byId.get(c.holder)?.name ?? c.holder, c.state as string, fmtWhen(Date.parse(c.expires_at!), r.now)]),
          ),
        );
      }
    }),
  );
}
