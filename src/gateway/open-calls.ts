/**
 * Calls and tunnels in flight, by session, token and chain, so a revocation can cut them: a
 * revoked session's open SSE stream or CONNECT tunnel ends when the revocation is learned, not
 * when the client hangs up.
 */
import type { Revoked } from '../tokens/live-cache.ts';
import type { GatewayPrincipal } from './principal.ts';

interface Open {
  sid: string;
  jti: string;
  chain: string[];
  kind: 'call' | 'tunnel';
  upstream: string;
  close: () => void;
}

export class OpenCalls {
  readonly #open = new Set<Open>();

  /** Registers something to close if the principal's token, session or chain is revoked; returns its untrack. */
  track(p: GatewayPrincipal, kind: Open['kind'], upstream: string, close: () => void): () => void {
    const o: Open = { sid: p.view.sid, jti: p.view.jti, chain: p.chain, kind, upstream, close };
    this.#open.add(o);
    return () => this.#open.delete(o);
  }

  /** Closes everything a revocation named (a token's revocation also revokes what was delegated from it: those jtis are named too). */
  close(r: Revoked): number {
    const sids = new Set(r.sids);
    const jtis = new Set(r.jtis);
    const agents = new Set(r.agents);
    let n = 0;
    for (const o of [...this.#open]) {
      if (sids.has(o.sid) || jtis.has(o.jti) || o.chain.some((a) => agents.has(a))) {
        this.#open.delete(o);
        o.close();
        n++;
      }
    }
    return n;
  }

  /** Open calls and tunnels per upstream (tunnels under `egress`), for status and metrics. */
  counts(): { calls: Record<string, number>; tunnels: number } {
    const calls: Record<string, number> = {};
    let tunnels = 0;
    for (const o of this.#open) {
      if (o.kind === 'tunnel') tunnels++;
      else calls[o.upstream] = (calls[o.upstream] ?? 0) + 1;
    }
    return { calls, tunnels };
  }
}
