/**
 * What the MCP front door keeps per gateway: tool pins (with their cache), the session-id MAC, and
 * the JSON-RPC ids in flight per MCP session (a second request reusing an id still in flight is
 * refused: its answer could not be told apart from the first one's).
 */
import { RpcRefusal, RPC, type JsonRpcId } from './wire.ts';
import type { GatewayContext } from '../context.ts';
import { McpPins } from './pins.ts';
import { SessionIds } from './session-id.ts';

export class McpState {
  readonly pins: McpPins;
  readonly sessionIds: SessionIds;
  readonly #inflight = new Map<string, Set<string>>();

  constructor(g: GatewayContext) {
    this.pins = new McpPins(g.b);
    this.sessionIds = new SessionIds(g.b.secretHashKey);
  }

  /** Claims `id` in the MCP session `session` until the returned release is called; refuses an id already in flight there. */
  claimId(session: string, id: JsonRpcId): () => void {
    const key = `${typeof id}:${id}`;
    let ids = this.#inflight.get(session);
    if (!ids) this.#inflight.set(session, (ids = new Set()));
    if (ids.has(key))
      throw new RpcRefusal(
        RPC.INVALID_REQUEST,
        'invalid_request',
        `request id ${JSON.stringify(id)} is already in flight in this MCP session`,
        'mcp_duplicate_id',
        400,
      );
    ids.add(key);
    return () => {
      ids.delete(key);
      if (!ids.size && this.#inflight.get(session) === ids) this.#inflight.delete(session);
    };
  }
}

const states = new WeakMap<GatewayContext, McpState>();

/** The MCP state of this gateway, made on first use. */
export function mcpStateOf(g: GatewayContext): McpState {
  let s = states.get(g);
  if (!s) states.set(g, (s = new McpState(g)));
  return s;
}
