/**
 * The one decision about an MCP upstream's tools, resources and prompts. `tools/list` is filtered
 * and `tools/call` is judged by the same function (`toolRefusal`), so a tool can never be listed
 * by one rule and called by another: the root policy lists the tool, the token's scope holds
 * `gw:{upstream}/{tool}` (`gw:{upstream}` holds them all; `*` and delegation as for every scope),
 * its pinned definition is intact, and for a call every argument the policy constrains matches its
 * glob. Resources and prompts are refused unless the policy lists them (and the scope holds
 * `gw:{upstream}/resources` or `gw:{upstream}/prompts`).
 */
import { CordonError } from '../../errors.ts';
import { covers, GW_PREFIX } from '../../policy/scopes.ts';
import type { Upstream } from '../../policy/types.ts';
import type { GatewayPrincipal } from '../principal.ts';

/** A tool's definition against its pin: `intact` (matches), `changed` (differs: hidden, refused), `unknown` (the upstream does not offer it). */
export type PinState = 'intact' | 'changed' | 'unknown';

/** The scope a tool call needs. */
export const toolScope = (upstream: string, tool: string): string => `${GW_PREFIX}${upstream}/${tool}`;
/** The scopes resources and prompts need (`gw:{upstream}` covers both). */
export const RESOURCES_PART = 'resources';
export const PROMPTS_PART = 'prompts';

const globCache = new Map<string, RegExp>();

/** A string glob: `*` matches any run of characters (none included), everything else itself. */
export function matchesStringGlob(glob: string, value: string): boolean {
  let re = globCache.get(glob);
  if (!re) {
    re = new RegExp(
      `^${glob
        .split('*')
        .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('[\\s\\S]*')}$`,
    );
    if (globCache.size > 1000) globCache.clear();
    globCache.set(glob, re);
  }
  return re.test(value);
}

/** An argument's value as a glob sees it: strings as they are, numbers and booleans as JSON writes them; anything else matches nothing. */
function argText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if ((typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean') return JSON.stringify(v);
  return undefined;
}

export interface ToolQuestion {
  tool: string;
  pin: PinState;
  /** For a call: its arguments (the key is present, the value may be undefined: no arguments). For a list: no key. */
  args?: unknown;
}

/**
 * Why the principal may not see or call `tool` of upstream `name`, or undefined when it may. The
 * refusal names what is missing: the policy's grant, the scope, the pin, or the argument.
 */
export function toolRefusal(p: GatewayPrincipal, name: string, upstream: Upstream, q: ToolQuestion): CordonError | undefined {
  const { tool } = q;
  const listed = upstream.tools ?? [];
  if (!listed.includes(tool))
    return new CordonError(
      'access_denied',
      `tool ${tool} of upstream ${name} is not granted by policy ${p.rootPolicy.name} (it grants: ${listed.join(', ')})`,
      {
        reason: 'tool_not_in_policy',
      },
    );
  const scope = toolScope(name, tool);
  if (!covers(p.scopes, scope))
    return new CordonError('insufficient_scope', `token scope does not grant ${scope} (needed for tool ${tool})`, {
      reason: 'gw_not_in_scope',
      auditParams: { scope_needed: scope },
    });
  if (q.pin === 'changed')
    return new CordonError(
      'access_denied',
      `tool ${tool} of upstream ${name} changed its definition since it was pinned; it is refused until an admin reviews it (cordon mcp diff ${name}) and pins it again (cordon mcp pin ${name} ${tool})`,
      { reason: 'tool_pin_changed' },
    );
  if (q.pin === 'unknown') return new CordonError('access_denied', `upstream ${name} does not offer tool ${tool}`, { reason: 'tool_not_offered' });
  // A call without arguments is still judged: an argument the policy constrains must be there.
  if (!Object.hasOwn(q, 'args')) return undefined;
  return argsRefusal(name, upstream, tool, q.args);
}

function argsRefusal(name: string, upstream: Upstream, tool: string, args: unknown): CordonError | undefined {
  const globs = upstream.args?.[tool];
  if (!globs) return undefined;
  const given = args ?? {};
  if (typeof given !== 'object' || Array.isArray(given))
    return new CordonError('invalid_request', `arguments of tool ${tool} must be an object`, { reason: 'tool_args_malformed' });
  for (const [arg, glob] of Object.entries(globs)) {
    const v = Object.hasOwn(given, arg) ? argText((given as Record<string, unknown>)[arg]) : undefined;
    // The value is the caller's and may be sensitive: the refusal (and its audit row) names the argument and the glob only.
    if (v === undefined || !matchesStringGlob(glob, v))
      return new CordonError(
        'access_denied',
        v === undefined
          ? `argument ${arg} of tool ${tool} is missing or not a string, number or boolean; the policy's glob for it is ${JSON.stringify(glob)} (upstream ${name})`
          : `argument ${arg} of tool ${tool} is outside the policy's glob ${JSON.stringify(glob)} (upstream ${name})`,
        { reason: 'tool_args_refused', auditParams: { argument: arg } },
      );
  }
  return undefined;
}

/** Throws the refusal, if any. */
export function judgeTool(p: GatewayPrincipal, name: string, upstream: Upstream, q: ToolQuestion): void {
  const e = toolRefusal(p, name, upstream, q);
  if (e) throw e;
}

/** Resources: the policy lists a glob the URI matches, and the scope holds `gw:{upstream}/resources`. */
export function resourceRefusal(p: GatewayPrincipal, name: string, upstream: Upstream, uri: unknown): CordonError | undefined {
  return partRefusal(p, name, upstream.resources, RESOURCES_PART, 'resource', uri);
}

/** Prompts: the policy lists the name (or a glob it matches), and the scope holds `gw:{upstream}/prompts`. */
export function promptRefusal(p: GatewayPrincipal, name: string, upstream: Upstream, prompt: unknown): CordonError | undefined {
  return partRefusal(p, name, upstream.prompts, PROMPTS_PART, 'prompt', prompt);
}

function partRefusal(p: GatewayPrincipal, name: string, globs: string[] | undefined, part: string, noun: string, value: unknown): CordonError | undefined {
  if (!globs?.length)
    return new CordonError('access_denied', `policy ${p.rootPolicy.name} grants no ${noun}s of upstream ${name}`, { reason: `${noun}_not_in_policy` });
  const scope = `${GW_PREFIX}${name}/${part}`;
  if (!covers(p.scopes, scope))
    return new CordonError('insufficient_scope', `token scope does not grant ${scope} (needed for ${noun}s)`, {
      reason: 'gw_not_in_scope',
      auditParams: { scope_needed: scope },
    });
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !globs.some((g) => matchesStringGlob(g, value)))
    return new CordonError('access_denied', `${noun} ${String(value).slice(0, 200)} of upstream ${name} is not granted by policy ${p.rootPolicy.name}`, {
      reason: `${noun}_not_in_policy`,
    });
  return undefined;
}

/** Whether the token reaches the upstream at all: `gw:{upstream}` or any of its tools, resources or prompts. */
export function reachesUpstream(p: GatewayPrincipal, name: string, upstream: Upstream): boolean {
  const parts = [...(upstream.tools ?? []), ...(upstream.resources?.length ? [RESOURCES_PART] : []), ...(upstream.prompts?.length ? [PROMPTS_PART] : [])];
  return covers(p.scopes, `${GW_PREFIX}${name}`) || parts.some((t) => covers(p.scopes, `${GW_PREFIX}${name}/${t}`));
}
