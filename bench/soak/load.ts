/**
 * The soak's load: agents' journeys driven at a fixed rate of operations (open loop: an operation
 * starts on schedule whether or not earlier ones have answered). A journey is one session's life:
 * start, backend credentials (Vault token, Vault database lease, sometimes STS), a delegation and
 * the delegate's own credential, gateway calls (reverse mode, a Vault KV key injected as a
 * header), introspections, and then one of three ends — the delegate's token and then the whole
 * session revoked, only the delegate's token revoked, or the session left to expire. After a
 * revocation the journey checks, a moment later, that introspection and the gateway refuse.
 */
import { performance } from 'node:perf_hooks';
import { basic } from '../lib/broker-proc.ts';
import type { Ledger } from './ledger.ts';
import type { SoakWorld } from './setup.ts';

export type OpKind = 'session' | 'credential' | 'delegation' | 'gateway' | 'introspect' | 'revoke' | 'check';
const GRANT_TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TT_ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
/** A check that follows a revocation waits this long (the gateway's view of revocations is current within this on SQLite). */
const CHECK_AFTER_MS = 1500;

interface Claims {
  sid: string;
  jti: string;
  exp: number;
}
const claimsOf = (jwt: string): Claims => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()) as Claims;

interface Journey {
  n: number;
  steps: Array<{ kind: OpKind; run: (j: Journey) => Promise<void> }>;
  busy: boolean;
  notBefore: number;
  root?: string;
  child?: string;
}

/** A small seeded PRNG (mulberry32): the same mix on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class OpError extends Error {}

export interface WindowStats {
  ops: number;
  byKind: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
}

export class LoadGenerator {
  readonly errors: Array<{ at: number; op: OpKind; message: string }> = [];
  ops = 0;
  /** Ticks on which no journey could take a step (the generator itself was saturated). */
  skipped = 0;
  gatewayOk = 0;
  sessions = 0;
  #latencies: number[] = [];
  #byKind: Record<string, number> = {};
  #journeys: Journey[] = [];
  #inFlight = new Set<Promise<void>>();
  #timer?: NodeJS.Timeout;
  #n = 0;
  readonly #rnd = prng(13);
  /** Sessions not revoked by their journey: the end of the run revokes the ones still live. */
  readonly #unrevoked = new Map<string, { root: string; expiresAt: number }>();

  constructor(
    private readonly w: SoakWorld,
    private readonly ledger: Ledger,
    private readonly rate: number,
    /** Journeys under way at once (each waits its turn between steps). */
    private readonly concurrency = 8,
  ) {}

  start(): void {
    const t0 = performance.now();
    let issued = 0;
    this.#timer = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) / 1000) * this.rate);
      // A stalled generator does not burst to catch up by more than a few operations.
      const n = Math.min(due - issued, 5);
      issued = due;
      for (let i = 0; i < n; i++) this.#tick();
    }, 5);
  }

  /** Stops starting operations and waits for those under way. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    while (this.#inFlight.size) await Promise.allSettled([...this.#inFlight]);
  }

  /** Latencies and operation counts since the last call. */
  window(): WindowStats {
    const l = this.#latencies.sort((a, b) => a - b);
    const pct = (p: number) => (l.length ? l[Math.min(l.length - 1, Math.ceil(p * l.length) - 1)] : NaN);
    const out = { ops: l.length, byKind: this.#byKind, p50Ms: pct(0.5), p99Ms: pct(0.99) };
    this.#latencies = [];
    this.#byKind = {};
    return out;
  }

  /** Ends every session the load left live (the opener's end_session revocation); returns how many. */
  async endLiveSessions(): Promise<number> {
    let n = 0;
    for (const [sid, s] of this.#unrevoked) {
      if (s.expiresAt <= Date.now() + 1000) continue;
      await this.#revoke(s.root, true);
      this.ledger.revoked(sid, Date.now());
      n++;
    }
    this.#unrevoked.clear();
    return n;
  }

  #tick(): void {
    const now = Date.now();
    const ready = this.#journeys.filter((j) => !j.busy && j.notBefore <= now);
    let j: Journey | undefined;
    if (this.#journeys.length < this.concurrency || !ready.length) {
      if (this.#journeys.length >= this.concurrency * 4) {
        this.skipped++;
        return;
      }
      j = this.#newJourney();
      this.#journeys.push(j);
    } else j = ready[Math.floor(this.#rnd() * ready.length)];
    const step = j.steps.shift()!;
    j.busy = true;
    const t = performance.now();
    const p = step
      .run(j)
      .then(
        () => {
          this.#latencies.push(performance.now() - t);
          this.#byKind[step.kind] = (this.#byKind[step.kind] ?? 0) + 1;
          this.ops++;
        },
        (e: unknown) => {
          this.ops++;
          this.errors.push({ at: Date.now(), op: step.kind, message: e instanceof Error ? e.message : String(e) });
          j.steps = []; // a journey that failed a step stops there
        },
      )
      .finally(() => {
        j.busy = false;
        if (!j.steps.length) this.#journeys = this.#journeys.filter((x) => x !== j);
        this.#inFlight.delete(p);
      });
    this.#inFlight.add(p);
  }

  #newJourney(): Journey {
    const r = this.#rnd;
    const withDb = r() < 0.5;
    const withSts = r() < 0.25;
    const end = r();
    const s: Journey['steps'] = [];
    const add = (kind: OpKind, run: (j: Journey) => Promise<void>) => s.push({ kind, run });
    add('session', (j) => this.#startSession(j, withSts));
    add('credential', (j) => this.#credential(j.root!, 'vault-token'));
    if (withDb) add('credential', (j) => this.#credential(j.root!, 'vault-db'));
    if (withSts) add('credential', (j) => this.#credential(j.root!, 's3-iam'));
    add('gateway', (j) => this.#gateway(j.root!));
    add('delegation', (j) => this.#delegate(j));
    add('credential', (j) => this.#credential(j.child!, 'vault-token'));
    add('introspect', (j) => this.#introspect(j.root!, true));
    add('gateway', (j) => this.#gateway(j.root!));
    add('introspect', (j) => this.#introspect(j.child!, true));
    add('gateway', (j) => this.#gateway(j.root!));
    if (end < 0.6) {
      add('revoke', async (j) => {
        await this.#revoke(j.child!, false);
        this.ledger.revoked(claimsOf(j.child!).jti, Date.now());
        j.notBefore = Date.now() + CHECK_AFTER_MS;
      });
      add('check', (j) => this.#introspect(j.child!, false));
    }
    if (end < 0.4) {
      add('revoke', async (j) => {
        const c = claimsOf(j.root!);
        await this.#revoke(j.root!, true);
        this.ledger.revoked(c.sid, Date.now());
        this.#unrevoked.delete(c.sid);
        j.notBefore = Date.now() + CHECK_AFTER_MS;
      });
      add('check', (j) => this.#introspect(j.root!, false));
      add('check', (j) => this.#gatewayRefuses(j.root!));
    }
    return { n: ++this.#n, steps: s, busy: false, notBefore: 0 };
  }

  async #post(path: string, form: Record<string, string>, auth: string): Promise<any> {
    const r = await fetch(`${this.w.brokerUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth },
      body: new URLSearchParams(form).toString(),
    });
    const text = await r.text();
    if (r.status !== 200) throw new OpError(`POST ${path}: ${r.status} ${text.slice(0, 200)}`);
    return text ? JSON.parse(text) : {};
  }

  get #rootAuth(): string {
    return basic(this.w.agents.root.id, this.w.agents.root.secret);
  }

  async #startSession(j: Journey, withSts: boolean): Promise<void> {
    const scope = `work:read cred:vault-token cred:vault-db gw:tickets${withSts ? ' cred:s3-iam' : ''}`;
    const body = await this.#post('/token', { grant_type: 'client_credentials', scope }, this.#rootAuth);
    j.root = body.access_token as string;
    const c = claimsOf(j.root);
    this.ledger.session(c.sid, c.exp * 1000);
    this.#unrevoked.set(c.sid, { root: j.root, expiresAt: c.exp * 1000 });
    this.sessions++;
  }

  async #delegate(j: Journey): Promise<void> {
    const body = await this.#post(
      '/token',
      {
        grant_type: GRANT_TE,
        subject_token: j.root!,
        subject_token_type: TT_ACCESS,
        requested_actor: this.w.agents.worker.id,
        scope: 'work:read cred:vault-token',
      },
      this.#rootAuth,
    );
    j.child = body.access_token as string;
  }

  async #credential(token: string, name: string): Promise<void> {
    const r = await fetch(`${this.w.brokerUrl}/credentials/${name}`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const text = await r.text();
    if (r.status !== 200) throw new OpError(`POST /credentials/${name}: ${r.status} ${text.slice(0, 200)}`);
    const body = JSON.parse(text);
    const c = claimsOf(token);
    const expiresAt = Date.parse(body.expires_at);
    const base = { sid: c.sid, jti: c.jti, expiresAt };
    if (name === 'vault-token') this.ledger.issued({ ...base, kind: 'vault-token', ref: body.credentials.accessor });
    else if (name === 'vault-db') this.ledger.issued({ ...base, kind: 'vault-lease', ref: body.lease_id });
    else this.ledger.issued({ ...base, kind: 'sts', ref: body.credentials.AccessKeyId });
  }

  async #gateway(token: string): Promise<void> {
    const r = await fetch(`${this.w.gatewayUrl}/u/tickets/tickets/${this.#n % 1000}`, { headers: { authorization: `Bearer ${token}` } });
    const text = await r.text();
    if (r.status !== 200) throw new OpError(`gateway GET /u/tickets: ${r.status} ${text.slice(0, 200)}`);
    this.gatewayOk++;
  }

  async #gatewayRefuses(token: string): Promise<void> {
    const r = await fetch(`${this.w.gatewayUrl}/u/tickets/tickets/1`, { headers: { authorization: `Bearer ${token}` } });
    await r.arrayBuffer();
    if (r.status !== 401 && r.status !== 403) throw new OpError(`gateway answered ${r.status} to a token of a revoked session`);
  }

  async #introspect(token: string, expectActive: boolean): Promise<void> {
    const body = await this.#post('/introspect', { token }, basic(this.w.agents.rs.id, this.w.agents.rs.secret));
    if (body.active !== expectActive)
      throw new OpError(`introspection said active=${String(body.active)} for a token that is ${expectActive ? 'live' : 'revoked'}`);
  }

  async #revoke(token: string, endSession: boolean): Promise<void> {
    await this.#post('/revoke', { token, ...(endSession ? { end_session: 'true' } : {}) }, this.#rootAuth);
  }
}
