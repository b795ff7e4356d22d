/**
 * What the gateway does to messages coming back from an upstream: lists of tools, resources,
 * resource templates and prompts are filtered through the same judgement as the requests that
 * use them, and the answer to the request of this exchange is handed to the caller (the audit
 * reads a call's `isError` from it). Everything else passes untouched.
 *
 * A list is filtered by the method of the request it answers, and any other answer that looks
 * like a list (a `tools` array, …) is filtered too: an upstream could send a list on another
 * stream (the GET stream, a replayed stream) under the id of a pending `tools/list`.
 */
import type { Upstream } from '../../policy/types.ts';
import type { GatewayPrincipal } from '../principal.ts';
import { promptRefusal, resourceRefusal, toolRefusal, type PinState } from './judge.ts';
import { offeredTool, type McpPins, type Witness } from './pins.ts';
import type { JsonRpcId } from './wire.ts';

export interface InspectContext {
  p: GatewayPrincipal;
  name: string;
  upstream: Upstream;
  pins: McpPins;
  witness: Witness;
  /** The request this exchange carries (absent for the GET stream). */
  request?: { id: JsonRpcId; method: string };
  /** Called with the answer to `request` when it passes. */
  onAnswer?: (answer: Record<string, unknown>) => void;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

type ListKind = 'tools' | 'resources' | 'resourceTemplates' | 'prompts';
const LIST_OF: Record<string, ListKind> = {
  'tools/list': 'tools',
  'resources/list': 'resources',
  'resources/templates/list': 'resourceTemplates',
  'prompts/list': 'prompts',
};

/** The replacement for a message from the upstream, or undefined to send it as it came. */
export async function inspectServerMessage(ctx: InspectContext, message: unknown): Promise<unknown> {
  if (!isObject(message) || message.method !== undefined || !Object.hasOwn(message, 'id')) return undefined;
  const ours = ctx.request !== undefined && message.id === ctx.request.id;
  if (ours) ctx.onAnswer?.(message);
  const result = message.result;
  if (!isObject(result)) return undefined;
  const kinds: ListKind[] = ours
    ? Object.hasOwn(LIST_OF, ctx.request!.method)
      ? [LIST_OF[ctx.request!.method]]
      : []
    : (['tools', 'resources', 'resourceTemplates', 'prompts'] as const).filter((k) => Array.isArray(result[k]));
  if (!kinds.length) return undefined;
  let changed = false;
  const out: Record<string, unknown> = { ...result };
  for (const kind of kinds) {
    const items = result[kind];
    if (!Array.isArray(items)) continue;
    const kept = await keep(ctx, kind, items);
    if (kept.length !== items.length) changed = true;
    out[kind] = kept;
  }
  // A filtered list is this principal's: a client must not serve it to another from a shared cache (2026-07-28 cache hints).
  if (out.cacheScope === 'public') {
    out.cacheScope = 'private';
    changed = true;
  }
  return changed ? { ...message, result: out } : undefined;
}

async function keep(ctx: InspectContext, kind: ListKind, items: unknown[]): Promise<unknown[]> {
  const { p, name, upstream } = ctx;
  if (kind === 'tools') return keepTools(ctx, items);
  const field = kind === 'resources' ? 'uri' : kind === 'resourceTemplates' ? 'uriTemplate' : 'name';
  return items.filter((it) => {
    const v = isObject(it) ? it[field] : undefined;
    if (typeof v !== 'string') return false;
    return (kind === 'prompts' ? promptRefusal(p, name, upstream, v) : resourceRefusal(p, name, upstream, v)) === undefined;
  });
}

/** Tools the policy lists are pinned or checked against their pins; only what the principal may call is kept, once per name. */
async function keepTools(ctx: InspectContext, items: unknown[]): Promise<unknown[]> {
  const { p, name, upstream } = ctx;
  const listed = new Set(upstream.tools ?? []);
  const offered = items.map(offeredTool);
  const states: Map<string, PinState> = await ctx.pins.observe(
    name,
    offered.filter((t) => t !== undefined && listed.has(t.name)).map((t) => t!),
    ctx.witness,
  );
  const seen = new Set<string>();
  return items.filter((_, i) => {
    const t = offered[i];
    if (!t || seen.has(t.name)) return false;
    seen.add(t.name);
    return toolRefusal(p, name, upstream, { tool: t.name, pin: states.get(t.name) ?? 'unknown' }) === undefined;
  });
}
