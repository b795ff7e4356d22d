import type { Attempted } from '../store/audit-events.ts';

/**
 * One request's attempt, as far as the broker has learned it: the entry point (an HTTP route, a
 * grant, a CLI command) opens it, decisions fill in who is asking and about what as they find out,
 * and if a decision refuses, the entry point writes exactly one deny row from it (recordRefusal).
 * Decisions never write refusals themselves, so nothing is written twice.
 */
export class Attempt {
  /** Refined as the request is understood (a token exchange turns out to be a delegation). */
  event: Attempted;
  readonly clientAddress: string | undefined;
  agentId: string | null = null;
  sid: string | null = null;
  jti: string | null = null;
  chain: string[] | null = null;
  readonly params: Record<string, unknown> = {};

  constructor(event: Attempted, clientAddress?: string) {
    this.event = event;
    this.clientAddress = clientAddress;
  }

  /** The agent asking (and the chain it acts in, when known). */
  by(agentId: string | null, chain?: string[] | null): this {
    this.agentId = agentId;
    if (chain !== undefined) this.chain = chain;
    return this;
  }

  /** The session and token the attempt concerns. */
  in(sid: string | null, jti?: string | null): this {
    this.sid = sid;
    if (jti !== undefined) this.jti = jti;
    return this;
  }

  /** What was asked, for the row (secrets never: the audit log scrubs known secret keys, but do not pass them). */
  note(params: Record<string, unknown>): this {
    Object.assign(this.params, params);
    return this;
  }
}
