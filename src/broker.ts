import pino, { type Logger } from 'pino';
import { type Clock, systemClock } from './clock.ts';
import type { Config } from './config/index.ts';
import { type Db, migrate, openDb, openReadDb, transact } from './store/db.ts';
import { Keyring, ensureSigningKey, loadSecretHashKey } from './keys/keyring.ts';
import { loadPolicies } from './policy/load.ts';
import type { PolicySet } from './policy/load.ts';
import { appendAudit } from './store/audit-chain.ts';
import { IssuanceWriter } from './store/issuance-writer.ts';
import type { JWTVerifyGetKey } from 'jose';
import type { Providers } from './providers/index.ts';
import type { RefusalLimiter } from './audit/refusal-limiter.ts';
import { createRefusalLimiter } from './audit/refusals.ts';
import type { BrokerMetrics } from './observability/metrics.ts';
import { LiveTokenCache } from './tokens/live-cache.ts';

/**
 * Everything a decision needs, built once at start and passed down explicitly
 * (no module-level singletons, so tests can run several brokers side by side).
 */
export interface Broker {
  config: Config;
  db: Db;
  /** For reads outside transactions (the same as `db` on PostgreSQL and in-memory SQLite). */
  read: Db;
  clock: Clock;
  keys: Keyring;
  policies: PolicySet;
  secretHashKey: Buffer;
  /** Group-commits issued tokens with their sessions and audit rows. */
  issuance: IssuanceWriter;
  log: Logger;
  /** Credential providers the configuration turned on (empty until startBackendCredentials attaches them). */
  providers: Providers;
  /** Caps refusals that name no known agent, per client address (audit/refusals). */
  refusals: RefusalLimiter;
  /** Key sets of the external issuers federation rules trust, kept between requests. */
  federationKeys: Map<string, FederationKeySource>;
  /** Prometheus metrics, when the broker serves them (observability/metrics). */
  metrics?: BrokerMetrics;
  /**
   * Token liveness from memory, shared by every front door of this broker (introspection,
   * `/credentials`, the gateway). Each front door starts it; until then, and whenever it cannot
   * vouch that it is current, checks read the database.
   */
  live: LiveTokenCache;
  /** Hooks other modules attach to (backend revocation, metrics); kept loose so the core does not import them. */
  hooks: BrokerHooks;
}

/** A federation key source: jose's resolver, and for a JWKS file the mtime it was read at. */
export interface FederationKeySource {
  getKey: JWTVerifyGetKey;
  mtimeMs?: number;
}

export interface BrokerHooks {
  /** Called after a revocation commits, so backend credentials die with the sessions and tokens. */
  onRevoked: Array<(r: { sids: string[]; jtis: string[] }) => Promise<void>>;
  /** Counts issued and refused decisions for metrics. */
  onDecision: Array<(event: string, decision: 'allow' | 'deny', reason: string | null) => void>;
}

export interface OpenOptions {
  clock?: Clock;
  log?: Logger;
  /** Record the policy load in the audit log (the server does; one-shot CLI commands do not). */
  auditPolicyLoad?: boolean;
}

/** Opens the database (migrating it), signing keys and policies. Fails closed on any problem. */
export async function openBroker(config: Config, opts: OpenOptions = {}): Promise<Broker> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? pino({ level: config.logLevel, redact: ['req.headers.authorization', 'req.headers.dpop', '*.client_secret'] });
  const policies = await loadPolicies(config.policyDir);
  // Warnings do not stop the broker, but whoever runs it should see them (names and places only).
  for (const w of policies.warnings) log.warn({ file: w.file, line: w.line, column: w.column }, `policy lint warning: ${w.message}`);
  const db = openDb(config.databaseUrl);
  try {
    await migrate(db);
    await ensureSigningKey(db, config.keyDir, config.keyAlg, clock);
    const keys = await Keyring.load(db, config.keyDir, clock);
    const secretHashKey = loadSecretHashKey(config.keyDir);
    if (opts.auditPolicyLoad) {
      await transact(db, (tx) =>
        appendAudit(tx, {
          at: clock.now(),
          event: 'policy.load',
          decision: 'info',
          params: { dir: config.policyDir, policies: policies.names() },
        }),
      );
    }
    const b: Omit<Broker, 'live'> & { live?: LiveTokenCache } = {
      config,
      db,
      read: openReadDb(config.databaseUrl, db),
      clock,
      keys,
      policies,
      secretHashKey,
      issuance: new IssuanceWriter(db, () => clock.now()),
      log,
      providers: new Map(),
      refusals: createRefusalLimiter({ db, clock, log }),
      federationKeys: new Map(),
      hooks: { onRevoked: [], onDecision: [] },
    };
    b.live = new LiveTokenCache(b as Broker);
    return b as Broker;
  } catch (e) {
    await db.destroy();
    throw e;
  }
}

export async function closeBroker(b: Broker): Promise<void> {
  await b.live.close();
  if (b.read !== b.db) await b.read.destroy();
  await b.db.destroy();
}
