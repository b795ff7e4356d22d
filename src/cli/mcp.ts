/**
 * `cordon mcp tools|diff|pin UPSTREAM [TOOL]`: what an MCP upstream offers against its pins. The
 * upstream is reached as the gateway reaches it (mcp-upstream.ts). `tools` lists every tool with
 * its pin state and the policies that grant it; `diff` shows what differs from the pins; `pin`
 * pins what is offered now (one tool, or all), each pin an audit row. A tool whose definition
 * changed stays hidden and refused at the gateway until it is pinned again.
 */
import type { Command } from 'commander';
import type { Broker } from '../broker.ts';
import { McpPins } from '../gateway/mcp/pins.ts';
import { mcpPins, type ToolPin } from '../store/mcp-pins.ts';
import { action, leaf, withBroker, type Ctx } from './context.ts';
import { chooseDefinition, listUpstreamTools, policiesDefining, type OfferedList } from './mcp-upstream.ts';
import { CliError, clip, printJson, table } from './output.ts';

type PinLabel = 'pinned' | 'changed' | 'unpinned';

interface ToolRow {
  name: string;
  hash: string;
  pin: PinLabel;
  pinned_hash: string | null;
  granted_by: string[];
  description: string | null;
}

const labelOf = (hash: string, pin: ToolPin | undefined): PinLabel =>
  !pin ? 'unpinned' : pin.pinnedHash === hash && pin.changedHash === null ? 'pinned' : 'changed';

async function survey(
  b: Broker,
  name: string,
  opts: { policy?: string; agent?: string },
  command: string,
): Promise<{ offered: OfferedList; pins: Map<string, ToolPin>; rows: ToolRow[]; policy: string; note?: string }> {
  const choice = await chooseDefinition(b, name, opts);
  const offered = await listUpstreamTools(b, name, choice, { ...(opts.agent ? { agent: opts.agent } : {}), command });
  const pins = new Map((await mcpPins.forUpstream(b.read, name)).map((p) => [p.tool, p]));
  const defining = policiesDefining(b, name);
  const rows = offered.tools.map((t) => ({
    name: t.name,
    hash: t.hash,
    pin: labelOf(t.hash, pins.get(t.name)),
    pinned_hash: pins.get(t.name)?.pinnedHash ?? null,
    granted_by: defining.filter((p) => p.upstreams[name].tools?.includes(t.name)).map((p) => p.name),
    description: typeof t.definition.description === 'string' ? t.definition.description : null,
  }));
  return { offered, pins, rows, policy: choice.policy.name, ...(choice.note ? { note: choice.note } : {}) };
}

/** The fields of two canonical definitions that differ, each as before → after (JSON). */
function fieldDiff(before: string | null, after: string): Array<{ field: string; pinned: string; offered: string }> {
  const a = before ? (JSON.parse(before) as Record<string, unknown>) : {};
  const c = JSON.parse(after) as Record<string, unknown>;
  const fields = [...new Set([...Object.keys(a), ...Object.keys(c)])].sort();
  return fields
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(c[k]))
    .map((k) => ({ field: k, pinned: JSON.stringify(a[k] ?? null), offered: JSON.stringify(c[k] ?? null) }));
}

export function registerMcp(program: Command, ctx: Ctx): void {
  const mcp = program.command('mcp').description('MCP upstreams: their tools, pins and changes');
  const common = (c: Command): Command =>
    c
      .option('--policy <name>', 'the policy whose definition of the upstream to use, when several define it')
      .option('--agent <agent>', "the agent whose session the upstream's credential is issued for (default: an active agent of that policy)");

  common(leaf(mcp, 'tools <upstream>', 'list the tools an MCP upstream offers, with their pin state and the policies that grant them')).action(
    action(ctx, async ({ args: [name], opts, json }) => {
      const r = await withBroker(ctx, (b) => survey(b, name, opts, `cordon mcp tools ${name}`));
      if (r.note) ctx.io.err(`cordon: ${r.note}\n`);
      if (json) return void (await printJson(ctx.io, { upstream: name, policy: r.policy, tools: r.rows }));
      if (!r.rows.length) return void (await ctx.io.out(`${name} offers no tools.\n`));
      await ctx.io.out(
        table(
          ['TOOL', 'PIN', 'GRANTED BY', 'HASH', 'DESCRIPTION'],
          r.rows.map((t) => [t.name, t.pin, t.granted_by.join(', ') || '-', t.hash.slice(0, 12), clip(t.description, 60)]),
        ),
      );
    }),
  );

  common(leaf(mcp, 'diff <upstream>', 'show how the tools an MCP upstream offers differ from their pins')).action(
    action(ctx, async ({ args: [name], opts, json }) => {
      const r = await withBroker(ctx, (b) => survey(b, name, opts, `cordon mcp diff ${name}`));
      if (r.note) ctx.io.err(`cordon: ${r.note}\n`);
      const offeredNames = new Set(r.offered.tools.map((t) => t.name));
      const granted = new Set(r.rows.filter((t) => t.granted_by.length).map((t) => t.name));
      const changes = r.offered.tools
        .filter((t) => labelOf(t.hash, r.pins.get(t.name)) === 'changed')
        .map((t) => ({ tool: t.name, fields: fieldDiff(r.pins.get(t.name)!.pinnedDefinition, t.canonical) }));
      const unpinned = r.rows.filter((t) => t.pin === 'unpinned').map((t) => ({ tool: t.name, granted: granted.has(t.name) }));
      const gone = [...r.pins.keys()].filter((t) => !offeredNames.has(t));
      if (json) return void (await printJson(ctx.io, { upstream: name, policy: r.policy, changes, unpinned, no_longer_offered: gone }));
      let out = '';
      for (const c of changes) {
        out += `${c.tool} (differs from its pin)\n`;
        for (const d of c.fields) out += `  ${d.field}\n    - pinned:  ${clip(d.pinned, 400)}\n    + offered: ${clip(d.offered, 400)}\n`;
      }
      const grantedNew = unpinned.filter((u) => u.granted).map((u) => u.tool);
      const otherNew = unpinned.filter((u) => !u.granted).map((u) => u.tool);
      if (grantedNew.length) out += `never pinned (pinned when first listed through the gateway, or by cordon mcp pin): ${grantedNew.join(', ')}\n`;
      if (otherNew.length) out += `never pinned, and granted by no policy: ${otherNew.join(', ')}\n`;
      for (const t of gone) out += `${t} (pinned, no longer offered)\n`;
      if (!changes.length) return void (await ctx.io.out(`${out}${name}: every pinned tool it offers matches its pin.\n`));
      await ctx.io.out(`${out}Review, then pin what you accept: cordon mcp pin ${name} [TOOL]\n`);
    }),
  );

  common(leaf(mcp, 'pin <upstream> [tool]', 'pin the definition an MCP upstream offers now (one tool, or every tool); audited')).action(
    action(ctx, async ({ args: [name, tool], opts, json }) => {
      const r = await withBroker(ctx, async (b) => {
        const s = await survey(b, name, opts, `cordon mcp pin ${name}${tool ? ` ${tool}` : ''}`);
        const wanted = tool ? s.offered.tools.filter((t) => t.name === tool) : s.offered.tools;
        if (tool && !wanted.length) throw new CliError(`${name} does not offer a tool named ${tool}`);
        const pins = new McpPins(b);
        const done: Array<{ tool: string; hash: string; changed: boolean }> = [];
        for (const t of wanted)
          done.push({
            tool: t.name,
            hash: t.hash,
            changed: await pins.pin(name, t, { agentId: null, sid: null, jti: null, chain: null, via: 'cli' }),
          });
        return { ...s, done };
      });
      if (r.note) ctx.io.err(`cordon: ${r.note}\n`);
      if (json) return void (await printJson(ctx.io, { upstream: name, pinned: r.done }));
      if (!r.done.length) return void (await ctx.io.out(`${name} offers no tools.\n`));
      await ctx.io.out(
        r.done
          .map((d) => (d.changed ? `pinned ${d.tool} (${d.hash.slice(0, 12)})\n` : `${d.tool} was already pinned as offered (${d.hash.slice(0, 12)})\n`))
          .join(''),
      );
    }),
  );
}
