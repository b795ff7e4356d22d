/**
 * The CredentialProvider contract: how the broker turns a decided credential grant into a
 * backend credential, and how it takes it back. Providers know nothing of HTTP, the database
 * or the audit log; tokens/credentials.ts records everything around them.
 *
 * Life of one credential (tokens/credentials.ts drives it):
 *   plan()        pure: lifetime and refusals, before anything is written
 *   intent row    credentials.state = 'pending' (committed)
 *   issue()       calls the backend; before it creates anything an agent could end up
 *                 holding it calls `checkpoint(handle)` so the intent row already names
 *                 something the broker can revoke if the answer is lost
 *   commit        state = 'issued' with the final handle, in one transaction with the audit row
 *   revoke()      on revocation, session end, or orphan recovery
 */
import type { Clock } from '../clock.ts';
import { CordonError } from '../errors.ts';
import type { CredentialSpec } from '../policy/types.ts';
import type { AccessTokenClaims } from '../tokens/claims.ts';

export type ProviderName = CredentialSpec['provider'];

/**
 * How to revoke (or deny) what a provider issued. JSON, stored in `credentials.handle`:
 * accessors, lease ids, role session names, source identities — never a secret.
 */
export type Handle = Record<string, string | number | boolean | string[] | null>;

export interface IssueSession {
  sid: string;
  /** The root agent (the session's owner, whose policy defines the credential). */
  agentId: string;
  agentName: string;
  task: string | null;
  expiresAt: number; // ms
}

export interface IssueRequest {
  /** The intent row id; providers put it into backend metadata so a credential can be traced back. */
  credentialId: string;
  session: IssueSession;
  /** The claims of the token the credential is issued for (holder, depth, jti, exp). */
  claims: AccessTokenClaims;
  /** The holder's agent name (for readable backend names). */
  holderName: string;
  name: string;
  spec: CredentialSpec;
  /** The broker clock's now (ms), fixed for the whole request. */
  now: number;
  /** Seconds left before the token's exp, and before the session ends. */
  remainingSec: { token: number; session: number };
  /** The token's exp (ms): nothing issued for it may outlive this. */
  tokenExpiresAt: number;
}

export interface IssuePlan {
  /** The lifetime asked of the backend, in seconds. */
  ttlSec: number;
  /** The latest the credential can live (ms): recorded on the intent row, used by orphan recovery. */
  expiresAtMax: number;
  /** Revocation facts known before any backend call (STS: role, source identity, session name). */
  handle?: Handle;
}

export interface IssueResult {
  /** What the agent receives. The only place secrets appear; never logged or stored. */
  credentials: Record<string, unknown>;
  /** When the credential really stops working (ms), as the backend enforces it. */
  expiresAt: number;
  handle: Handle;
  leaseId?: string;
  /** Audit-safe facts about what was asked of the backend (policies, ttl, duration). */
  details: Record<string, unknown>;
  /**
   * A static secret (Vault KV): the value is not created for this request and cannot be revoked;
   * `expiresAt` is when the token that read it dies, not when the value stops working.
   */
  static?: boolean;
}

/** One credential to revoke: its row id, session and recorded handle. */
export interface RevokeTarget {
  id: string;
  sid: string;
  jti: string;
  handle: Handle | null;
  expiresAt: number; // ms
}

export type { DenyRecord } from '../store/iam-denies.ts';
import type { DenyRecord } from '../store/iam-denies.ts';

/** What a rebuild of a role's deny policy achieved. */
export interface DenyApplyResult {
  /** Entries in the policy IAM now holds. */
  applied: string[];
  /** Entries that did not fit in IAM's inline policy budget (not denied). */
  omitted: string[];
}

/** What a provider may do with IAM deny entries (the broker owns the database side). */
export interface DenyHooks {
  /** Records deny entries (committed, audited) before a provider writes them into IAM, so the sweeper can always remove them later. */
  recordDeny(entries: DenyRecord[]): Promise<void>;
  /**
   * Rebuilds a role's deny policy from the committed database state: hands the role's active
   * entries to `apply` (which PUTs the whole document, or deletes it when there are none),
   * serialised per role. Entries of `mine` that `apply` reports omitted are withdrawn (their
   * credentials are reported failed and retried), so the database never claims a deny IAM lacks.
   */
  syncDenies(roleArn: string, mine: string[], apply: (entries: DenyRecord[]) => Promise<DenyApplyResult>): Promise<DenyApplyResult>;
}

export interface RevokeContext extends DenyHooks {
  now: number;
  /**
   * Why: `session` (the whole session was revoked), `expired` (the session simply reached its
   * end: what was issued in it expires with it, and nothing needs denying), `token` (some tokens
   * of a live session were revoked: only their credentials may die), `orphan` (an intent whose
   * backend answer was lost).
   */
  scope: 'session' | 'expired' | 'token' | 'orphan';
}

export type RevokeOutcome =
  /** The backend confirmed it is gone (or it already was). */
  | 'revoked'
  /** The credential had already expired; nothing was asked of the backend. */
  | 'expired'
  /**
   * The backend cannot revoke it (STS without revoke_via_iam, a static KV secret), or there is no
   * reason to (a session that simply ended is not a revocation): it stays alive until expiry.
   */
  | 'not_revocable'
  /** The backend call failed; retry later. */
  | 'failed'
  /** Nothing was known to revoke (an orphan whose intent names nothing). */
  | 'unknown';

export interface RevokeResult {
  id: string;
  outcome: RevokeOutcome;
  /** Safe to show an admin (no secrets). */
  note: string;
  deny?: DenyRecord;
  /** For `failed`: the kind of backend error (metrics). */
  kind?: ProviderErrorKind;
}

/** The broker's side of a provider's reconcile: its deny records as committed, and their removal, audited. */
export interface ReconcileContext {
  /** Legacy per-revocation deny policies whose credentials have all expired. */
  dueLegacyDenies(): Promise<Array<{ id: string; roleArn: string; policyName: string }>>;
  /** Records that a legacy deny policy is gone from the backend. */
  legacyDenyRemoved(id: string): Promise<void>;
  /** Roles with active deny entries. */
  deniedRoles(): Promise<string[]>;
  /**
   * Rebuilds a role from its entries as committed (serialised per role): `apply` gets the entries
   * still due and puts the role's policy; the entries past their time are then marked removed.
   * Returns how many were removed.
   */
  rebuildRole(roleArn: string, apply: (keep: DenyRecord[]) => Promise<DenyApplyResult>): Promise<number>;
}

export interface ProviderHealth {
  ok: boolean;
  detail: string;
}

export interface CredentialProvider {
  readonly name: ProviderName;
  /** Pure: the lifetime this request gets, or a CordonError refusal. No I/O. */
  plan(req: IssueRequest): IssuePlan;
  /** Calls the backend. `checkpoint` persists a partial handle before anything revocable exists. */
  issue(req: IssueRequest, plan: IssuePlan, checkpoint: (h: Handle) => Promise<void>): Promise<IssueResult>;
  /** Revokes many credentials (providers may batch, e.g. one IAM deny entry per session). One result per target. */
  revoke(targets: RevokeTarget[], ctx: RevokeContext): Promise<RevokeResult[]>;
  /**
   * Periodic upkeep of what the provider keeps at its backend beyond single credentials (STS: the
   * roles' IAM revocation policies), run by the sweeper on every sweep; idempotent. Returns how
   * many backend entries it removed.
   */
  reconcile?(ctx: ReconcileContext): Promise<number>;
  health(): Promise<ProviderHealth>;
  /** Warm up (login); failures are logged, not fatal: the backend may come up later. */
  start?(): Promise<void>;
  close?(): Promise<void>;
}

export interface ProviderDeps {
  clock: Clock;
  log: { warn(o: object, msg: string): void; info(o: object, msg: string): void; error(o: object, msg: string): void };
  /** Clock tolerance, seconds (config.clockSkewSec): added where backend and broker clocks meet. */
  clockSkewSec: number;
}

/**
 * Backend failures, typed. `kind` is for logs and tests; the CordonError code is what the agent sees:
 * - down / sealed / timeout / throttled → 503 temporarily_unavailable (try again later)
 * - refused / not_found / bad_answer / misconfigured → 502 bad_gateway (the backend said no or
 *   answered nonsense: an admin must look)
 */
export type ProviderErrorKind = 'down' | 'sealed' | 'timeout' | 'throttled' | 'refused' | 'not_found' | 'bad_answer' | 'misconfigured';

export class ProviderError extends CordonError {
  readonly provider: ProviderName;
  readonly kind: ProviderErrorKind;
  constructor(provider: ProviderName, kind: ProviderErrorKind, description: string, cause?: unknown) {
    const unavailable = kind === 'down' || kind === 'sealed' || kind === 'timeout' || kind === 'throttled';
    super(unavailable ? 'temporarily_unavailable' : 'bad_gateway', description, { reason: `${provider}_${kind}`, cause });
    this.provider = provider;
    this.kind = kind;
  }
}

export const isProviderError = (e: unknown): e is ProviderError => e instanceof ProviderError;

/** Bounded, single-line text from a backend message, for error descriptions (backends do not echo secrets, but keep it short). */
export function backendText(s: unknown, max = 200): string {
  const t = String(s ?? '')
    .replace(/\s+/g, ' ')
    .replace(/^1 error occurred: \* /, '')
    .trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
}

/** Network-level failures shared by both providers (node errno codes, axios and smithy shapes). */
export function networkErrorKind(e: unknown): 'down' | 'timeout' | undefined {
  const err = e as { code?: string; name?: string; message?: string; cause?: { code?: string } };
  const code = err?.code ?? err?.cause?.code;
  if (code === 'ECONNABORTED' || code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT' || err?.name === 'TimeoutError' || err?.name === 'AbortError')
    return 'timeout';
  if (/timeout/i.test(err?.message ?? '') && !/status/i.test(err?.message ?? '')) return 'timeout';
  if (code && ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ERR_SOCKET_CONNECTION_TIMEOUT'].includes(code))
    return 'down';
  return undefined;
}
