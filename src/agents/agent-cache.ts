/**
 * Agent rows from memory, for the reads every decision makes (client authentication, session
 * start, delegation, a gateway principal's policies). Every change of an agent row that a
 * decision depends on writes a feed row in its transaction (revocation: `agent`; disable, enable,
 * new credentials: `agentrow`), and the live-token cache, which follows the feed, drops the agent
 * here as it drops its tokens; this process's own changes are dropped at once. Rows are answered
 * from memory only while that view of the feed is current, and only rows found are kept (an
 * unknown id reads the database every time, so nothing negative goes stale).
 */
import type { Q } from '../store/db.ts';
import { agents, type Agent } from '../store/agents.ts';

/** What the cache needs of whoever follows the feed. */
export interface FeedView {
  /** Memory may answer (the feed was read recently enough). */
  readonly current: boolean;
  /** Bumped by every drop: a row read before a drop is not kept (it may predate the change). */
  readonly epoch: number;
}

export class AgentCache {
  readonly #feed: FeedView;
  readonly #byId = new Map<string, Agent>();

  constructor(feed: FeedView) {
    this.#feed = feed;
  }

  /** The agent's row (a shared object: callers must not change it). */
  async get(q: Q, id: string): Promise<Agent | undefined> {
    if (this.#feed.current) {
      const hit = this.#byId.get(id);
      if (hit) return hit;
    }
    const epoch = this.#feed.epoch;
    const row = await agents.get(q, id);
    if (row && this.#feed.current && epoch === this.#feed.epoch) this.#byId.set(id, row);
    return row;
  }

  forget(ids: Iterable<string>): void {
    for (const id of ids) this.#byId.delete(id);
  }

  clear(): void {
    this.#byId.clear();
  }
}
