/**
 * An upstream's `Mcp-Session-Id` is bound to the Cordon session and the agent that opened it: the
 * client is given the upstream's id behind a MAC over (Cordon session, agent, upstream, id), and a
 * request whose id does not verify for its own token is answered 404 (MCP's "session not found",
 * after which a client starts a new one). An agent that learns another agent's MCP session id
 * cannot read that session's stream or act in it through the gateway. The MAC key is derived from
 * the broker's secret-hash key, which every replica shares, so any replica verifies any id.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { GatewayPrincipal } from '../principal.ts';

const MAC_CHARS = 22; // 128 bits, base64url
/** What an upstream may use as a session id (MCP: visible ASCII). */
const VISIBLE_ASCII = /^[\x21-\x7e]{1,512}$/;

export class SessionIds {
  readonly #key: Buffer;

  constructor(secretHashKey: Buffer) {
    // A key of its own: a MAC made here can never be taken for a secret hash, nor the other way round.
    this.#key = createHmac('sha256', secretHashKey).update('cordon mcp session id v1').digest();
  }

  #mac(p: GatewayPrincipal, upstream: string, id: string): string {
    return createHmac('sha256', this.#key)
      .update(`${p.view.sid}\u0000${p.claims.client_id}\u0000${upstream}\u0000${id}`)
      .digest('base64url')
      .slice(0, MAC_CHARS);
  }

  /** The id the client is given for the upstream's `id`; undefined when the upstream's id is not a valid one. */
  wrap(p: GatewayPrincipal, upstream: string, id: string): string | undefined {
    if (!VISIBLE_ASCII.test(id)) return undefined;
    return `${this.#mac(p, upstream, id)}${id}`;
  }

  /** The upstream's id behind what the client sent, or undefined when it was not given to this agent in this session. */
  unwrap(p: GatewayPrincipal, upstream: string, given: string): string | undefined {
    if (given.length <= MAC_CHARS) return undefined;
    const id = given.slice(MAC_CHARS);
    const mac = Buffer.from(given.slice(0, MAC_CHARS));
    const want = Buffer.from(this.#mac(p, upstream, id));
    return mac.length === want.length && timingSafeEqual(mac, want) ? id : undefined;
  }
}
