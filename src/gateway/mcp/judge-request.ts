/**
 * A client's message before it may reach the upstream: `tools/call` through the tool decision
 * (with the tool's pin, checked against the upstream's own `tools/list` when the gateway has never
 * seen the tool), resources and prompts through theirs, methods of those families the gateway does
 * not know refused, and everything else (lifecycle, notifications, responses, extensions) passed.
 */
import type { GatewayPrincipal } from '../principal.ts';
import type { Upstream } from '../../policy/types.ts';
import { CordonError } from '../../errors.ts';
import { UpstreamError } from '../forward.ts';
import { judgeTool, promptRefusal, resourceRefusal, toolRefusal, type PinState } from './judge.ts';
import { offeredTool, type McpPins, type Witness } from './pins.ts';
import { RPC, RpcRefusal, type ClientMessage } from './wire.ts';

export interface JudgeContext {
  p: GatewayPrincipal;
  name: string;
  upstream: Upstream;
  pins: McpPins;
  witness: Witness;
  /** Sends a `tools/list` page to the upstream in the caller's exchange (for a tool the gateway has never seen). */
  listTools: (cursor: string | undefined) => Promise<Record<string, unknown> | undefined>;
}

/** Families whose every method the gateway judges: one it does not know is refused, not passed. */
const GUARDED = /^(tools|resources|prompts|completion)\//;
const PASSED = new Set(['tools/list']);

/**
 * Whether the gateway judged what this method's message says. Such a message goes upstream as
 * the gateway re-serialises it from what it parsed, never as received: a body with a key given
 * twice (`"name"` twice, `"id"` twice) could be read one way here and another way by the upstream.
 */
export const isJudged = (m: ClientMessage): boolean =>
  m.kind !== 'response' && (GUARDED.test(m.method) || m.method === 'subscriptions/listen') && !PASSED.has(m.method);
/** Pages of the upstream's tool list read, at most, to find a tool the gateway has never seen. */
const MAX_PAGES = 20;

const invalidParams = (why: string): RpcRefusal => new RpcRefusal(RPC.INVALID_PARAMS, 'invalid_request', why, 'mcp_invalid_params');

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Throws the refusal of `m`, if any. */
export async function judgeClientMessage(ctx: JudgeContext, m: ClientMessage): Promise<void> {
  if (m.kind === 'response') return;
  const { p, name, upstream } = ctx;
  const params = m.params ?? {};
  const refuse = (e: CordonError | undefined): void => {
    if (e) throw e;
  };
  switch (m.method) {
    case 'tools/call': {
      if (m.kind !== 'request') throw invalidParams('tools/call must be a request (with an id)');
      const tool = params.name;
      if (typeof tool !== 'string') throw invalidParams('tools/call needs params.name (a string)');
      // Policy, scope and arguments first: a refusal there needs no pin lookup.
      refuse(toolRefusal(p, name, upstream, { tool, pin: 'intact', args: params.arguments }));
      judgeTool(p, name, upstream, { tool, pin: await pinStateForCall(ctx, tool), args: params.arguments });
      return;
    }
    case 'resources/list':
    case 'resources/templates/list':
      return refuse(resourceRefusal(p, name, upstream, undefined));
    case 'resources/read':
    case 'resources/subscribe':
    case 'resources/unsubscribe':
      if (typeof params.uri !== 'string') throw invalidParams(`${m.method} needs params.uri (a string)`);
      return refuse(resourceRefusal(p, name, upstream, params.uri));
    case 'prompts/list':
      return refuse(promptRefusal(p, name, upstream, undefined));
    case 'prompts/get':
      if (typeof params.name !== 'string') throw invalidParams('prompts/get needs params.name (a string)');
      return refuse(promptRefusal(p, name, upstream, params.name));
    case 'completion/complete': {
      const ref = isObject(params.ref) ? params.ref : {};
      if (ref.type === 'ref/prompt') return refuse(promptRefusal(p, name, upstream, typeof ref.name === 'string' ? ref.name : ''));
      if (ref.type === 'ref/resource') return refuse(resourceRefusal(p, name, upstream, typeof ref.uri === 'string' ? ref.uri : ''));
      throw invalidParams('completion/complete needs params.ref of type ref/prompt or ref/resource');
    }
    case 'subscriptions/listen': {
      // 2026-07-28: resource subscriptions ride on the listen request.
      const wanted = isObject(params.notifications) ? params.notifications.resourceSubscriptions : undefined;
      if (wanted === undefined) return;
      if (!Array.isArray(wanted)) throw invalidParams('notifications.resourceSubscriptions must be an array of URIs');
      for (const uri of wanted) refuse(resourceRefusal(p, name, upstream, typeof uri === 'string' ? uri : ''));
      return;
    }
    default:
      if (GUARDED.test(m.method) && !PASSED.has(m.method))
        throw new CordonError('access_denied', `the gateway does not pass ${m.method.slice(0, 100)} to MCP upstreams`, { reason: 'mcp_method_refused' });
  }
}

/**
 * The pin's state for a call. A tool whose definition the gateway has never seen (no pin), or not
 * seen lately (PIN_VERIFY_MS), is looked up in the upstream's own list first, in the caller's
 * exchange: a call never reaches a tool whose current definition nobody has checked.
 */
async function pinStateForCall(ctx: JudgeContext, tool: string): Promise<PinState> {
  const state = await ctx.pins.stateOf(ctx.name, tool);
  if (state !== 'unknown') return state;
  const listed = new Set(ctx.upstream.tools ?? []);
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const answer = await ctx.listTools(cursor);
    const result = isObject(answer?.result) ? answer.result : undefined;
    if (!result)
      throw new UpstreamError(
        'bad_gateway',
        `the gateway could not check the definition of tool ${tool} against its pin: the upstream did not answer tools/list`,
        {
          reason: 'mcp_pin_check_failed',
        },
      );
    const tools = Array.isArray(result?.tools) ? result.tools : [];
    const offered = tools.map(offeredTool).filter((t) => t !== undefined && listed.has(t.name)) as NonNullable<ReturnType<typeof offeredTool>>[];
    const states = await ctx.pins.observe(ctx.name, offered, ctx.witness);
    const found = states.get(tool);
    if (found) return found;
    cursor = typeof result?.nextCursor === 'string' ? result.nextCursor : undefined;
    if (cursor === undefined) break;
  }
  return 'unknown';
}
