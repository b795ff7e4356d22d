/**
 * Tool pinning: a tool's definition (name, description, input schema) is hashed over its RFC 8785
 * canonical JSON and pinned the first time the gateway sees it (or when an admin pins it). A
 * definition that later differs is recorded as a change — hidden from `tools/list` and refused at
 * `tools/call` on every replica until an admin pins it again — with one audit row per change and
 * a metric. Pins are read through a short-lived memory cache, so a change recorded by another
 * replica is honoured here within PIN_REFRESH_MS, and a definition not seen in a list for
 * PIN_VERIFY_MS is looked at again before the next call.
 */
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { Counter } from 'prom-client';
import type { Broker } from '../../broker.ts';
import { appendAudit } from '../../store/audit-chain.ts';
import { transact } from '../../store/db.ts';
import { mcpPins, type SeenDefinition, type ToolPin } from '../../store/mcp-pins.ts';
import type { PinState } from './judge.ts';

/** How long a pin read from the database is trusted before it is read again. */
export const PIN_REFRESH_MS = 2000;
/**
 * A tool's definition seen in a list is trusted for calls this long (broker clock); after that the
 * gateway lists the upstream's tools itself before a call, so a definition changed behind the
 * gateway's back is caught within this window even if no client lists again.
 */
export const PIN_VERIFY_MS = 60_000;
const CHANGES_METRIC = 'cordon_mcp_pin_changes_total';

/** A tool definition as an upstream offers it, reduced to what is pinned. */
export interface OfferedTool {
  name: string;
  hash: string;
  /** Canonical JSON of { name, description, inputSchema }. */
  canonical: string;
}

/** What is pinned of a tool as offered in `tools/list`; undefined when it is not a tool object with a string name. */
export function offeredTool(t: unknown): OfferedTool | undefined {
  if (t === null || typeof t !== 'object' || Array.isArray(t)) return undefined;
  const { name, description, inputSchema } = t as Record<string, unknown>;
  if (typeof name !== 'string') return undefined;
  const canonical = canonicalize({ name, description, inputSchema }) as string;
  return { name, canonical, hash: createHash('sha256').update(canonical).digest('hex') };
}

/** Who saw a definition (the audit row names them). */
export interface Witness {
  agentId: string | null;
  sid: string | null;
  jti: string | null;
  chain: string[] | null;
  via: 'gateway' | 'cli';
}

const stateOfPin = (pin: ToolPin): PinState => (pin.changedHash === null ? 'intact' : 'changed');

export class McpPins {
  readonly #b: Broker;
  readonly #cache = new Map<string, { pin: ToolPin | undefined; readAt: number }>();
  /** When this gateway last saw each tool's definition in a list (broker clock). */
  readonly #seenAt = new Map<string, number>();

  constructor(b: Broker) {
    this.#b = b;
  }

  /**
   * The recorded state of a tool's pin for a call: `unknown` when it was never seen, or when this
   * gateway has not seen its definition for PIN_VERIFY_MS (the caller then lists and observes).
   */
  async stateOf(upstream: string, tool: string): Promise<PinState> {
    const pin = await this.#pin(upstream, tool);
    if (!pin) return 'unknown';
    const state = stateOfPin(pin);
    const seen = this.#seenAt.get(key(upstream, tool));
    if (state === 'intact' && (seen === undefined || this.#b.clock.now() - seen > PIN_VERIFY_MS)) return 'unknown';
    return state;
  }

  /** Drops what was read from the database (a pin changed elsewhere is then honoured at once). */
  forget(): void {
    this.#cache.clear();
  }

  /**
   * The state of each offered definition, recording what is new: a first sight pins it; a
   * definition that differs from its pin is recorded as changed (audited once per change). A
   * recorded change stays until an admin pins again, even if the upstream goes back to the
   * pinned definition: a server that switched once may switch again between list and call.
   */
  async observe(upstream: string, offered: readonly OfferedTool[], who: Witness): Promise<Map<string, PinState>> {
    const out = new Map<string, PinState>();
    for (const t of offered) {
      if (this.#seenAt.size > 10_000) this.#seenAt.clear();
      this.#seenAt.set(key(upstream, t.name), this.#b.clock.now());
      let pin = await this.#pin(upstream, t.name);
      const seen: SeenDefinition = { upstream, tool: t.name, hash: t.hash, definition: t.canonical };
      if (!pin || (pin.pinnedHash !== t.hash && pin.changedHash !== t.hash)) {
        await this.#record(seen, who, pin ? 'changed' : 'first_seen', pin);
        // Judged against what is recorded now (another replica may have pinned it first, with another definition).
        pin = await this.#pin(upstream, t.name);
      }
      out.set(t.name, pin && pin.pinnedHash === t.hash && pin.changedHash === null ? 'intact' : pin ? 'changed' : 'unknown');
    }
    return out;
  }

  /** An admin pins what the upstream offers now (audited); returns whether the pin changed. */
  async pin(upstream: string, t: OfferedTool, who: Witness): Promise<boolean> {
    const before = await mcpPins.get(this.#b.db, upstream, t.name);
    if (before && before.pinnedHash === t.hash && before.changedHash === null) return false;
    await transact(this.#b.db, async (tx) => {
      await mcpPins.pin(tx, { upstream, tool: t.name, hash: t.hash, definition: t.canonical }, this.#b.clock.now());
      await appendAudit(tx, {
        at: this.#b.clock.now(),
        event: 'mcp.pin',
        decision: 'info',
        ...whoOf(who),
        params: { upstream, tool: t.name, hash: t.hash, previous_hash: before?.pinnedHash ?? null, pinned_by: 'admin', via: who.via },
      });
    });
    this.#cache.delete(key(upstream, t.name));
    return true;
  }

  async #record(seen: SeenDefinition, who: Witness, what: 'first_seen' | 'changed', pin?: ToolPin): Promise<void> {
    const now = this.#b.clock.now();
    const wrote = await transact(this.#b.db, async (tx) => {
      const did = what === 'first_seen' ? await mcpPins.pinIfAbsent(tx, seen, now) : await mcpPins.markChanged(tx, seen, now);
      // Another call or replica may have recorded the same thing first: one row per change.
      if (!did) return false;
      await appendAudit(tx, {
        at: now,
        event: what === 'first_seen' ? 'mcp.pin' : 'mcp.pin_changed',
        decision: 'info',
        ...whoOf(who),
        ...(what === 'changed'
          ? { reason: `tool ${seen.tool} of upstream ${seen.upstream} changed its definition: hidden and refused until an admin pins it again` }
          : {}),
        params: {
          upstream: seen.upstream,
          tool: seen.tool,
          hash: seen.hash,
          ...(what === 'first_seen' ? { pinned_by: 'first_seen' } : { pinned_hash: pin?.pinnedHash ?? null }),
          via: who.via,
        },
      });
      return true;
    });
    this.#cache.delete(key(seen.upstream, seen.tool));
    if (wrote && what === 'changed') this.#changes()?.inc({ upstream: seen.upstream });
  }

  async #pin(upstream: string, tool: string): Promise<ToolPin | undefined> {
    const k = key(upstream, tool);
    // Monotonic time: this is the cache's freshness, not a decision.
    const now = performance.now();
    const held = this.#cache.get(k);
    if (held && now - held.readAt < PIN_REFRESH_MS) return held.pin;
    const pin = await mcpPins.get(this.#b.read, upstream, tool);
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(k, { pin, readAt: now });
    return pin;
  }

  #changes(): Counter<'upstream'> | undefined {
    const m = this.#b.metrics;
    if (!m) return undefined;
    return (
      (m.registry.getSingleMetric(CHANGES_METRIC) as Counter<'upstream'> | undefined) ??
      new Counter({
        name: CHANGES_METRIC,
        help: 'MCP tool definitions seen differing from their pin (each change once), by upstream.',
        labelNames: ['upstream'] as const,
        registers: [m.registry],
      })
    );
  }
}

const key = (upstream: string, tool: string): string => `${upstream}\u0000${tool}`;

const whoOf = (w: Witness): { agentId: string | null; sid: string | null; jti: string | null; chain: string[] | null } => ({
  agentId: w.agentId,
  sid: w.sid,
  jti: w.jti,
  chain: w.chain,
});
