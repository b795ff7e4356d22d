import { type Q, num, numOrNull } from './db.ts';

/** Who pinned a definition: the gateway the first time it saw the tool, or an admin (`cordon mcp pin`). */
export type PinnedBy = 'first_seen' | 'admin';

/** One pinned tool definition of an MCP upstream (table `mcp_tool_pins`). */
export interface ToolPin {
  upstream: string;
  tool: string;
  /** SHA-256 (hex) of the canonical definition. */
  pinnedHash: string;
  /** The canonical JSON of the pinned definition (name, description, input schema). */
  pinnedDefinition: string;
  pinnedAt: number;
  pinnedBy: PinnedBy;
  /** Set while the upstream offers another definition: the tool is hidden and refused until pinned again. */
  changedHash: string | null;
  changedDefinition: string | null;
  changedAt: number | null;
}

const fromRow = (r: Record<string, unknown>): ToolPin => ({
  upstream: r.upstream as string,
  tool: r.tool as string,
  pinnedHash: r.pinned_hash as string,
  pinnedDefinition: r.pinned_definition as string,
  pinnedAt: num(r.pinned_at),
  pinnedBy: r.pinned_by as PinnedBy,
  changedHash: (r.changed_hash as string | null) ?? null,
  changedDefinition: (r.changed_definition as string | null) ?? null,
  changedAt: numOrNull(r.changed_at),
});

export interface SeenDefinition {
  upstream: string;
  tool: string;
  hash: string;
  definition: string;
}

/** Pins of MCP tool definitions. Every change returns whether this call made it, so its audit row is written once. */
export const mcpPins = {
  async get(q: Q, upstream: string, tool: string): Promise<ToolPin | undefined> {
    const r = await q('mcp_tool_pins').where({ upstream, tool }).first();
    return r ? fromRow(r) : undefined;
  },
  async forUpstream(q: Q, upstream: string): Promise<ToolPin[]> {
    return (await q('mcp_tool_pins').where({ upstream }).orderBy('tool')).map(fromRow);
  },
  /** The first sight of a tool pins it; false when a pin already existed (another call or replica won). */
  async pinIfAbsent(q: Q, d: SeenDefinition, at: number): Promise<boolean> {
    const rows = await q('mcp_tool_pins')
      .insert({
        upstream: d.upstream,
        tool: d.tool,
        pinned_hash: d.hash,
        pinned_definition: d.definition,
        pinned_at: at,
        pinned_by: 'first_seen',
        changed_hash: null,
        changed_definition: null,
        changed_at: null,
      })
      .onConflict(['upstream', 'tool'])
      .ignore()
      .returning('tool');
    return rows.length > 0;
  },
  /** Records a definition that differs from the pin; false when it was already recorded (or equals the pin). */
  async markChanged(q: Q, d: SeenDefinition, at: number): Promise<boolean> {
    const n = await q('mcp_tool_pins')
      .where({ upstream: d.upstream, tool: d.tool })
      .whereNot('pinned_hash', d.hash)
      .andWhereRaw('(changed_hash IS NULL OR changed_hash <> ?)', [d.hash])
      .update({ changed_hash: d.hash, changed_definition: d.definition, changed_at: at });
    return n > 0;
  },
  /** An admin pins this definition (insert or replace), clearing any recorded change. */
  async pin(q: Q, d: SeenDefinition, at: number): Promise<void> {
    await q('mcp_tool_pins')
      .insert({
        upstream: d.upstream,
        tool: d.tool,
        pinned_hash: d.hash,
        pinned_definition: d.definition,
        pinned_at: at,
        pinned_by: 'admin',
        changed_hash: null,
        changed_definition: null,
        changed_at: null,
      })
      .onConflict(['upstream', 'tool'])
      .merge();
  },
};
