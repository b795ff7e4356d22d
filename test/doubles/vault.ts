/**
 * VaultDouble — a small HTTP server that speaks HashiCorp Vault's JSON API
 * closely enough that node-vault (or curl) cannot tell the difference for the
 * paths Cordon uses, and keeps Vault's rules:
 *
 * - tokens: `auth/token/create|create-orphan|lookup|lookup-self|lookup-accessor|
 *   renew-self|revoke|revoke-self|revoke-accessor|revoke-orphan`, with the token
 *   hierarchy (revoking a token revokes every descendant and every lease any of
 *   them created), the "child policies must be subset of parent" rule, num_uses,
 *   TTL / explicit_max_ttl / system max TTL, and lazy expiry driven by `now()`.
 * - token roles: `auth/token/roles/:name` (write, read, delete) and
 *   `auth/token/create/:role_name`, where the role's allowed_policies (not the
 *   caller's policies) bound the child, disallowed_policies refuse, and orphan,
 *   renewable and token_explicit_max_ttl apply (Vault's handleCreateCommon).
 *   As in Vault, a child's TTL is NOT capped at its parent's: the child simply
 *   dies when the parent expires or is revoked.
 * - logins: `auth/approle/login`, `auth/jwt/login` (orphan tokens, `default` added).
 * - dynamic secrets: `database/creds/:role`, `aws/creds/:role`, owned by the
 *   reading token; `sys/leases/revoke|renew|lookup`, `sys/leases/revoke-prefix`.
 * - KV v2 at `secret/`: `secret/data/:path` read and write.
 * - ACL: per-policy path rules (Vault glob syntax), `root` allows everything,
 *   a built-in `default` policy, 403 "permission denied" otherwise.
 * - Error shapes and status codes as Vault sends them (`{"errors":[...]}`;
 *   400 for invalid requests, 403 permission denied, 404, 503 sealed), 204 with
 *   no body for revocations.
 *
 * Differences from Vault worth knowing: no LIST verb (node's HTTP parser rejects
 * it; use `GET …?list=true`), no namespaces (X-Vault-Namespace is only recorded),
 * no batch tokens, no response wrapping, no identity entities.
 */
import type http from 'node:http';
import { randomUUID } from 'node:crypto';
import { HttpDouble, type NowSource, type RecordedRequestBase, rand62 } from './http-double.ts';

// ---------------------------------------------------------------- public types

export type VaultCapability = 'create' | 'read' | 'update' | 'delete' | 'list' | 'patch' | 'sudo' | 'deny';
/** A path rule: a bare string grants create/read/update/delete/list/patch; an object names capabilities. */
export type VaultPathRule = string | { path: string; capabilities: VaultCapability[] };

export interface VaultRecordedRequest extends RecordedRequestBase {
  /** Path below `/v1/`, e.g. `auth/token/create`. */
  vaultPath: string;
  /** Parsed JSON body (`{}` when empty; the raw string when it was not JSON). */
  body: any;
  /** X-Vault-Token (or Bearer token) sent, if any. */
  token?: string;
  /** X-Vault-Namespace sent, if any. */
  namespace?: string;
  /** The JSON body the double answered with (undefined for 204). */
  response?: any;
}

export interface VaultDoubleOptions {
  /** Root token id (policies ['root'], never expires). Default 'root-token'. */
  rootToken?: string;
  /** System default lease/token TTL in seconds. Vault's default: 768h. */
  defaultLeaseTtlSec?: number;
  /** System max lease/token TTL in seconds. Vault's default: 768h. */
  maxLeaseTtlSec?: number;
  /** Clock (ms since epoch); a function or the project's Clock. Default Date.now. */
  now?: NowSource;
}

export type TokenState = 'active' | 'revoked' | 'expired';
export type LeaseState = 'active' | 'revoked' | 'expired';

export interface VaultTokenInfo {
  id: string;
  accessor: string;
  policies: string[];
  parent: string | null;
  children: string[];
  orphan: boolean;
  displayName: string;
  path: string;
  meta: Record<string, string> | null;
  /** Remaining uses; 0 = unlimited. */
  numUses: number;
  /** The num_uses the token was created with. */
  numUsesLimit: number;
  ttlSec: number;
  explicitMaxTtlSec: number;
  renewable: boolean;
  createdAtMs: number;
  /** null = never expires (root). */
  expiresAtMs: number | null;
  state: TokenState;
  endedAtMs?: number;
  endReason?: string;
}

export interface VaultLeaseInfo {
  id: string;
  /** e.g. `database/creds/tickets-ro` */
  path: string;
  engine: 'database' | 'aws';
  role: string;
  /** Token id that read the secret (owns the lease). */
  owner: string;
  ownerAccessor: string;
  issuedAtMs: number;
  ttlSec: number;
  expiresAtMs: number;
  renewable: boolean;
  data: Record<string, unknown>;
  state: LeaseState;
  endedAtMs?: number;
  endReason?: string;
}

export interface AppRoleOptions {
  /** role_name reported in token metadata. Default: the role id. */
  roleName?: string;
  ttlSec?: number;
  maxTtlSec?: number;
  numUses?: number;
  noDefaultPolicy?: boolean;
}
export interface JwtRoleOptions {
  ttlSec?: number;
  maxTtlSec?: number;
  numUses?: number;
  noDefaultPolicy?: boolean;
}
/** A token role (`auth/token/roles/:name`); field names as Vault's, camelCased. */
export interface TokenRoleOptions {
  allowedPolicies?: string[];
  disallowedPolicies?: string[];
  /** Children created through the role have no parent (default false). */
  orphan?: boolean;
  /** Default true, as in Vault. */
  renewable?: boolean;
  tokenExplicitMaxTtlSec?: number;
  tokenNoDefaultPolicy?: boolean;
}
export interface DynamicRoleOptions {
  /** Role max_ttl in seconds (default: system max). */
  maxTtlSec?: number;
}

export interface MintTokenOptions {
  policies: string[];
  ttlSec?: number;
  explicitMaxTtlSec?: number;
  numUses?: number;
  /** Parent token id (default: none, an orphan). */
  parent?: string;
  meta?: Record<string, string>;
  displayName?: string;
  renewable?: boolean;
  /** Add 'default' to the policies (default true, as Vault does). */
  addDefault?: boolean;
  /** Use this id instead of a random one. */
  id?: string;
}

// ---------------------------------------------------------------- internals

interface TokenEntry extends Omit<VaultTokenInfo, 'children'> {
  children: Set<string>;
  period: number;
}
interface Lease extends VaultLeaseInfo {
  maxTtlSec: number;
}
interface Rule {
  pattern: string;
  caps: Set<VaultCapability>;
}
interface AppRole {
  roleId: string;
  secretId: string;
  policies: string[];
  opts: AppRoleOptions;
}
interface JwtRole {
  policies: string[];
  verify: (jwt: string) => boolean;
  opts: JwtRoleOptions;
}
interface TokenRole {
  name: string;
  allowedPolicies: string[];
  disallowedPolicies: string[];
  orphan: boolean;
  renewable: boolean;
  tokenExplicitMaxTtlSec: number;
  tokenNoDefaultPolicy: boolean;
}
interface DynRole {
  defaultTtlSec: number;
  maxTtlSec?: number;
}
interface KvVersion {
  data: Record<string, unknown>;
  createdMs: number;
}
interface Injected {
  status: number;
  errors: string[];
  path?: string | RegExp;
}

/** An error Vault answers with `{"errors":[...]}`. */
class VaultHttpError extends Error {
  constructor(
    readonly status: number,
    readonly errors: string[],
  ) {
    super(errors.join('; '));
  }
}
const PERMISSION_DENIED = '1 error occurred:\n\t* permission denied\n\n';
const denied = (): VaultHttpError => new VaultHttpError(403, [PERMISSION_DENIED]);
const invalid = (msg: string): VaultHttpError => new VaultHttpError(400, [msg]);

const ALL_BUT_SUDO: VaultCapability[] = ['create', 'read', 'update', 'delete', 'list', 'patch'];
const DEFAULT_POLICY: VaultPathRule[] = [
  { path: 'auth/token/lookup-self', capabilities: ['read'] },
  { path: 'auth/token/renew-self', capabilities: ['update'] },
  { path: 'auth/token/revoke-self', capabilities: ['update'] },
  { path: 'sys/capabilities-self', capabilities: ['update'] },
  { path: 'sys/renew', capabilities: ['update'] },
  { path: 'sys/leases/renew', capabilities: ['update'] },
  { path: 'sys/leases/lookup', capabilities: ['update'] },
  { path: 'cubbyhole/*', capabilities: ['create', 'read', 'update', 'delete', 'list'] },
  { path: 'sys/wrapping/wrap', capabilities: ['update'] },
  { path: 'sys/wrapping/lookup', capabilities: ['update'] },
  { path: 'sys/wrapping/unwrap', capabilities: ['update'] },
  { path: 'sys/tools/hash', capabilities: ['update'] },
  { path: 'sys/tools/hash/*', capabilities: ['update'] },
];
/** Paths Vault treats as root-protected: they need `sudo` besides the operation's capability. */
const SUDO_PATHS = [/^sys\/leases\/revoke-prefix\//, /^sys\/leases\/revoke-force\//, /^auth\/token\/revoke-orphan$/];

const H768 = 768 * 3600;

/** Vault's parseutil.ParseDurationSecond: number = seconds, digit string = seconds, else Go duration (+ `d`). */
export function parseVaultDuration(v: unknown): number {
  if (v === undefined || v === null || v === '') return 0;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw invalid(`time: invalid duration "${v}"`);
    return Math.trunc(v);
  }
  if (typeof v !== 'string') throw invalid(`time: invalid duration "${String(v)}"`);
  const s = v.trim();
  if (/^-?\d+$/.test(s)) return parseInt(s, 10);
  const unit: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400 };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)/y;
  let neg = false;
  let i = 0;
  if (s[0] === '-' || s[0] === '+') {
    neg = s[0] === '-';
    i = 1;
  }
  let total = 0;
  if (i >= s.length) throw invalid(`time: invalid duration "${v}"`);
  while (i < s.length) {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) throw invalid(`time: invalid duration "${v}"`);
    total += parseFloat(m[1]) * unit[m[2]];
    i = re.lastIndex;
  }
  return Math.trunc(neg ? -total : total);
}

/** Vault's policyutil.SanitizePolicies: trim, lower-case, drop empties and duplicates, sort; optionally add `default`. */
function sanitizePolicies(list: string[], addDefault: boolean): string[] {
  const set = new Set<string>();
  for (const p of list) {
    const t = p.trim().toLowerCase();
    if (t) set.add(t);
  }
  if (addDefault) set.add('default');
  return [...set].sort();
}
const isSubset = (sup: string[], sub: string[]): boolean => sub.every((p) => sup.includes(p));
/** Go's `%q` of a []string, as Vault's error messages print policy lists: `["a" "b"]`. */
const goQuoted = (list: string[]): string => `[${list.map((p) => JSON.stringify(p)).join(' ')}]`;
/** framework.GenericNameRegex: what Vault accepts as a role name in a path. */
const ROLE_NAME = /^\w(?:[\w.-]*\w)?$/;

function policiesParam(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') return v.split(',');
  throw invalid('Error decoding request: policies must be a list of strings');
}
function intParam(v: unknown, name: string): number {
  if (v === undefined || v === null || v === '') return 0;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n)) throw invalid(`Error decoding request: cannot parse '${name}' as int`);
  return n;
}
function boolParam(v: unknown): boolean | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === '1' || v === 1) return true;
  if (v === 'false' || v === '0' || v === 0) return false;
  throw invalid(`Error decoding request: cannot parse '${String(v)}' as bool`);
}
function metaParam(v: unknown): Record<string, string> | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid("Error decoding request: 'meta' expected a map");
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) out[k] = String(val);
  return out;
}

const iso = (ms: number): string => new Date(ms).toISOString();
const epochSec = (ms: number): number => Math.floor(ms / 1000);

// Vault's ACL glob matching and rule priority.
function globMatches(pattern: string, path: string): boolean {
  const prefix = pattern.endsWith('*');
  const p = prefix ? pattern.slice(0, -1) : pattern;
  if (!p.includes('+')) return prefix ? path.startsWith(p) : path === p;
  const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const src = p
    .split('/')
    .map((seg) => (seg === '+' ? '[^/]+' : esc(seg)))
    .join('/');
  return new RegExp(`^${src}${prefix ? '' : '$'}`).test(path);
}
/** true when a has higher priority than b (Vault docs, "Priority matching"). */
function higherPriority(a: string, b: string): boolean {
  const firstWild = (s: string): number => {
    const i = [s.indexOf('+'), s.indexOf('*')].filter((x) => x >= 0);
    return i.length ? Math.min(...i) : Infinity;
  };
  if (firstWild(a) !== firstWild(b)) return firstWild(a) > firstWild(b);
  const aStar = a.endsWith('*');
  const bStar = b.endsWith('*');
  if (aStar !== bStar) return !aStar;
  const plus = (s: string): number => s.split('/').filter((x) => x === '+').length;
  if (plus(a) !== plus(b)) return plus(a) < plus(b);
  if (a.length !== b.length) return a.length > b.length;
  return a > b;
}

// ---------------------------------------------------------------- the double

export class VaultDouble extends HttpDouble<VaultRecordedRequest> {
  readonly rootToken: string;
  /** When true every request gets 503 {"errors":["Vault is sealed"]} (sys/health and sys/seal-status report it). */
  sealed = false;
  defaultLeaseTtlSec: number;
  maxLeaseTtlSec: number;

  #tokens = new Map<string, TokenEntry>();
  #accessors = new Map<string, string>();
  #leases = new Map<string, Lease>();
  #policies = new Map<string, Rule[]>();
  #appRoles = new Map<string, AppRole>();
  #jwtRoles = new Map<string, JwtRole>();
  #tokenRoles = new Map<string, TokenRole>();
  #dbRoles = new Map<string, DynRole>();
  #awsRoles = new Map<string, DynRole>();
  #kv = new Map<string, KvVersion[]>();
  #failures: Injected[] = [];

  constructor(rootToken = 'root-token', opts: Omit<VaultDoubleOptions, 'rootToken'> = {}) {
    super(opts.now);
    this.rootToken = rootToken;
    this.defaultLeaseTtlSec = opts.defaultLeaseTtlSec ?? H768;
    this.maxLeaseTtlSec = opts.maxLeaseTtlSec ?? H768;
    this.setPolicyPaths('default', DEFAULT_POLICY);
    this.#addRootToken();
  }

  // ------------------------------------------------------------ configuration

  /**
   * Define (replace) a policy. Paths use Vault's syntax: exact, `prefix*`, `+` for
   * one segment. A string grants create/read/update/delete/list/patch (no sudo).
   */
  setPolicyPaths(policy: string, paths: VaultPathRule[]): void {
    this.#policies.set(
      policy.toLowerCase(),
      paths.map((r) => (typeof r === 'string' ? { pattern: r, caps: new Set(ALL_BUT_SUDO) } : { pattern: r.path, caps: new Set(r.capabilities) })),
    );
  }

  /** Configure an AppRole role_id/secret_id pair (mount `auth/approle`). */
  addAppRole(roleId: string, secretId: string, policies: string[], opts: AppRoleOptions = {}): void {
    this.#appRoles.set(roleId, { roleId, secretId, policies, opts });
  }

  /** Configure a JWT auth role (mount `auth/jwt`); `verify` decides whether a presented JWT is valid. */
  addJwtRole(role: string, policies: string[], verify: (jwt: string) => boolean, opts: JwtRoleOptions = {}): void {
    this.#jwtRoles.set(role, { policies, verify, opts });
  }

  /** Define (replace) a token role, as `vault write auth/token/roles/NAME …` would. */
  addTokenRole(name: string, opts: TokenRoleOptions = {}): void {
    if (!ROLE_NAME.test(name)) throw new Error(`invalid token role name ${JSON.stringify(name)}`);
    this.#tokenRoles.set(name, {
      name,
      allowedPolicies: sanitizePolicies(opts.allowedPolicies ?? [], false),
      // Vault keeps disallowed_policies as given, only lower-cased and de-duplicated.
      disallowedPolicies: [...new Set((opts.disallowedPolicies ?? []).map((p) => p.trim().toLowerCase()).filter(Boolean))],
      orphan: opts.orphan ?? false,
      renewable: opts.renewable ?? true,
      tokenExplicitMaxTtlSec: opts.tokenExplicitMaxTtlSec ?? 0,
      tokenNoDefaultPolicy: opts.tokenNoDefaultPolicy ?? false,
    });
  }

  /** Configure a database secrets engine role (mount `database`). */
  addDatabaseRole(name: string, defaultTtlSec = 3600, opts: DynamicRoleOptions = {}): void {
    this.#dbRoles.set(name, { defaultTtlSec, maxTtlSec: opts.maxTtlSec });
  }

  /** Configure an AWS secrets engine role (mount `aws`, iam_user credentials). */
  addAwsRole(name: string, defaultTtlSec = 3600, opts: DynamicRoleOptions = {}): void {
    this.#awsRoles.set(name, { defaultTtlSec, maxTtlSec: opts.maxTtlSec });
  }

  /** Seed (or add a version to) a KV v2 secret at `secret/<path>`. */
  putKv(path: string, data: Record<string, unknown>): number {
    const versions = this.#kv.get(path) ?? [];
    versions.push({ data: { ...data }, createdMs: this.now() });
    this.#kv.set(path, versions);
    return versions.length;
  }

  /**
   * Make the next matching request fail with `status` and `{"errors": errors}`.
   * `path` (a prefix of the Vault path, e.g. 'database/creds', or a RegExp) limits which request.
   * Queue several calls to fail several requests.
   */
  failNext(status: number, errors: string[] = [], path?: string | RegExp): void {
    this.#failures.push({ status, errors, path });
  }

  /** Forget recorded requests and injected failures; unseal; no delay. Tokens, leases, roles stay. */
  override reset(): void {
    super.reset();
    this.#failures = [];
    this.sealed = false;
  }

  /** Drop every token (but the root token), lease and KV secret. Roles and policies stay. */
  clearState(): void {
    this.#tokens.clear();
    this.#accessors.clear();
    this.#leases.clear();
    this.#kv.clear();
    this.#addRootToken();
  }

  // ------------------------------------------------------------ inspection helpers (no HTTP)

  /** Create a token directly (not recorded), e.g. the broker's own token. Returns its id and accessor. */
  mintToken(opts: MintTokenOptions): { token: string; accessor: string } {
    this.#sweep();
    const ttl = opts.ttlSec ?? this.defaultLeaseTtlSec;
    const te = this.#createTokenEntry({
      id: opts.id,
      policies: sanitizePolicies(opts.policies, opts.addDefault ?? true),
      parent: opts.parent ?? null,
      meta: opts.meta ?? null,
      displayName: opts.displayName ?? 'token',
      path: 'auth/token/create',
      numUses: opts.numUses ?? 0,
      ttlSec: ttl,
      explicitMaxTtlSec: opts.explicitMaxTtlSec ?? 0,
      renewable: opts.renewable ?? ttl > 0,
      period: 0,
    });
    return { token: te.id, accessor: te.accessor };
  }

  isTokenActive(token: string): boolean {
    this.#sweep();
    return this.#tokens.get(token)?.state === 'active';
  }
  isAccessorActive(accessor: string): boolean {
    const id = this.#accessors.get(accessor);
    return id !== undefined && this.isTokenActive(id);
  }
  isLeaseActive(leaseId: string): boolean {
    this.#sweep();
    return this.#leases.get(leaseId)?.state === 'active';
  }
  /** Snapshot of a token by id or accessor (revoked/expired ones too), or undefined. */
  getToken(tokenOrAccessor: string): VaultTokenInfo | undefined {
    this.#sweep();
    const te = this.#tokens.get(tokenOrAccessor) ?? this.#tokens.get(this.#accessors.get(tokenOrAccessor) ?? '');
    return te ? { ...te, children: [...te.children], policies: [...te.policies] } : undefined;
  }
  /** Snapshot of a lease (revoked/expired ones too), or undefined. */
  getLease(leaseId: string): VaultLeaseInfo | undefined {
    this.#sweep();
    const l = this.#leases.get(leaseId);
    return l ? { ...l } : undefined;
  }
  /** All leases, optionally only those owned by one token (id). */
  listLeases(owner?: string): VaultLeaseInfo[] {
    this.#sweep();
    return [...this.#leases.values()].filter((l) => owner === undefined || l.owner === owner).map((l) => ({ ...l }));
  }
  /** All tokens ever created (incl. the root token). */
  listTokens(): VaultTokenInfo[] {
    this.#sweep();
    return [...this.#tokens.keys()].map((id) => this.getToken(id)!);
  }
  /** Recorded requests to one Vault path (e.g. 'auth/token/create'). */
  requestsTo(vaultPath: string | RegExp): VaultRecordedRequest[] {
    return this.requests.filter((r) => (typeof vaultPath === 'string' ? r.vaultPath === vaultPath : vaultPath.test(r.vaultPath)));
  }

  // ------------------------------------------------------------ HTTP

  protected record(base: RecordedRequestBase, req: http.IncomingMessage): VaultRecordedRequest {
    let body: any = {};
    if (base.rawBody.trim() !== '') {
      try {
        body = JSON.parse(base.rawBody);
      } catch {
        body = base.rawBody;
      }
    }
    const auth = req.headers.authorization;
    const token = (req.headers['x-vault-token'] as string | undefined) ?? (auth && /^Bearer\s+/i.test(auth) ? auth.replace(/^Bearer\s+/i, '') : undefined);
    return {
      ...base,
      vaultPath: base.path.startsWith('/v1/') ? base.path.slice(4) : base.path.replace(/^\//, ''),
      body,
      token,
      namespace: req.headers['x-vault-namespace'] as string | undefined,
    };
  }

  protected async handle(rec: VaultRecordedRequest, _req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, json?: unknown): void => {
      rec.response = json;
      if (json === undefined) {
        res.writeHead(status, { 'cache-control': 'no-store' }).end();
      } else {
        const text = JSON.stringify(json);
        res
          .writeHead(status, {
            'content-type': 'application/json',
            'cache-control': 'no-store',
            'content-length': Buffer.byteLength(text),
          })
          .end(text);
      }
    };
    try {
      const injected = this.#takeFailure(rec.vaultPath);
      if (injected) return send(injected.status, { errors: injected.errors });
      if (!rec.path.startsWith('/v1/')) throw new VaultHttpError(404, []);
      const result = await this.#dispatch(rec);
      send(result.status, result.body);
    } catch (err) {
      if (err instanceof VaultHttpError) send(err.status, { errors: err.errors });
      else send(500, { errors: [`1 error occurred:\n\t* ${err instanceof Error ? err.message : String(err)}\n\n`] });
    }
  }

  #takeFailure(vaultPath: string): Injected | undefined {
    const i = this.#failures.findIndex((f) => f.path === undefined || (typeof f.path === 'string' ? vaultPath.startsWith(f.path) : f.path.test(vaultPath)));
    return i < 0 ? undefined : this.#failures.splice(i, 1)[0];
  }

  async #dispatch(rec: VaultRecordedRequest): Promise<{ status: number; body?: unknown }> {
    const path = rec.vaultPath.replace(/\/+$/, '');
    const method = rec.method.toUpperCase();
    const body: Record<string, unknown> = typeof rec.body === 'object' && rec.body !== null && !Array.isArray(rec.body) ? rec.body : {};
    if (typeof rec.body === 'string') {
      let why = 'invalid JSON';
      try {
        JSON.parse(rec.body);
      } catch (e) {
        why = e instanceof Error ? e.message : why;
      }
      throw invalid(`failed to parse JSON input: ${why}`);
    }

    // Unauthenticated system endpoints.
    if (path === 'sys/health' && method === 'GET') return this.#health();
    if (path === 'sys/seal-status' && method === 'GET') return { status: 200, body: this.#sealStatus() };
    if (this.sealed) throw new VaultHttpError(503, ['Vault is sealed']);
    this.#sweep();

    // Login endpoints: no token needed.
    if (path === 'auth/approle/login' && (method === 'POST' || method === 'PUT')) return this.#appRoleLogin(body);
    if (path === 'auth/jwt/login' && (method === 'POST' || method === 'PUT')) return this.#jwtLogin(body);

    // Everything else is authenticated.
    if (!rec.token) throw invalid('missing client token');
    const te = this.#tokens.get(rec.token);
    if (!te || te.state !== 'active') throw denied();

    // Use the token (num_uses), even if the ACL then denies the request, as Vault does.
    let lastUse = false;
    if (te.numUses > 0) {
      te.numUses -= 1;
      lastUse = te.numUses === 0;
    }
    try {
      const op = this.#operation(method, rec.query);
      if (!this.#allowed(te, path, op)) throw denied();
      const result = this.#route(te, method, path, body, rec.query);
      if (lastUse) {
        this.#revokeTree(te.id, 'num_uses exhausted');
        const b = result.body as { lease_id?: string } | undefined;
        if (b && typeof b.lease_id === 'string' && b.lease_id !== '')
          throw invalid('Secret cannot be returned; token had one use left, so leased credentials were immediately revoked.');
      }
      return result;
    } finally {
      if (lastUse) this.#revokeTree(te.id, 'num_uses exhausted');
    }
  }

  #operation(method: string, query: Record<string, string>): VaultCapability {
    switch (method) {
      case 'GET':
        return query.list === 'true' || query.list === '1' ? 'list' : 'read';
      case 'POST':
      case 'PUT':
        return 'update';
      case 'DELETE':
        return 'delete';
      case 'PATCH':
        return 'patch';
      default:
        throw new VaultHttpError(405, [`1 error occurred:\n\t* unsupported operation\n\n`]);
    }
  }

  #capabilities(te: TokenEntry, path: string): Set<VaultCapability> {
    if (te.policies.includes('root')) return new Set<VaultCapability>([...ALL_BUT_SUDO, 'sudo']);
    let best: string | undefined;
    const merged = new Map<string, Set<VaultCapability>>();
    for (const name of te.policies) {
      for (const rule of this.#policies.get(name) ?? []) {
        if (!globMatches(rule.pattern, path)) continue;
        const set = merged.get(rule.pattern) ?? new Set<VaultCapability>();
        rule.caps.forEach((c) => set.add(c));
        merged.set(rule.pattern, set);
        if (best === undefined || higherPriority(rule.pattern, best)) best = rule.pattern;
      }
    }
    const caps = best === undefined ? new Set<VaultCapability>() : merged.get(best)!;
    return caps.has('deny') ? new Set<VaultCapability>(['deny']) : caps;
  }

  #allowed(te: TokenEntry, path: string, op: VaultCapability): boolean {
    const caps = this.#capabilities(te, path);
    if (caps.has('deny')) return false;
    const ok = op === 'update' ? caps.has('update') || caps.has('create') : caps.has(op);
    if (!ok) return false;
    if (SUDO_PATHS.some((re) => re.test(path))) return caps.has('sudo');
    return true;
  }

  #route(te: TokenEntry, method: string, path: string, body: Record<string, unknown>, query: Record<string, string>): { status: number; body?: unknown } {
    const write = method === 'POST' || method === 'PUT';
    let m: RegExpMatchArray | null;
    if (write && (path === 'auth/token/create' || path === 'auth/token/create-orphan')) return this.#tokenCreate(te, body, path === 'auth/token/create-orphan');
    if (write && (m = path.match(/^auth\/token\/create\/([^/]+)$/))) {
      const role = ROLE_NAME.test(m[1]) ? this.#tokenRoles.get(m[1]) : undefined;
      if (!role) throw invalid(`unknown role ${m[1]}`);
      return this.#tokenCreate(te, body, false, role);
    }
    if ((m = path.match(/^auth\/token\/roles\/([^/]+)$/)) && ROLE_NAME.test(m[1])) {
      if (write) return this.#tokenRoleWrite(m[1], body);
      if (method === 'GET') return this.#tokenRoleRead(m[1]);
      if (method === 'DELETE') {
        this.#tokenRoles.delete(m[1]);
        return { status: 204 };
      }
    }
    if (path === 'auth/token/lookup-self' && (method === 'GET' || write)) return this.#tokenLookupResponse(te);
    if (path === 'auth/token/lookup' && write) {
      const id = typeof body.token === 'string' && body.token !== '' ? body.token : te.id;
      const target = this.#tokens.get(id);
      if (!target || target.state !== 'active') throw new VaultHttpError(403, ['bad token']);
      return this.#tokenLookupResponse(target);
    }
    if (path === 'auth/token/lookup-accessor' && write) {
      const target = this.#byAccessor(body.accessor);
      const r = this.#tokenLookupResponse(target);
      (r.body as { data: { id: string } }).data.id = '';
      return r;
    }
    if (path === 'auth/token/renew-self' && write) return this.#tokenRenew(te, body.increment);
    if (path === 'auth/token/revoke-self' && write) {
      this.#revokeTree(te.id, 'revoke-self');
      return { status: 204 };
    }
    if (path === 'auth/token/revoke' && write) {
      if (typeof body.token !== 'string' || body.token === '') throw invalid('missing token ID');
      const target = this.#tokens.get(body.token);
      if (target && target.state === 'active') this.#revokeTree(target.id, 'revoke');
      return { status: 204 };
    }
    if (path === 'auth/token/revoke-accessor' && write) {
      const target = this.#byAccessor(body.accessor);
      this.#revokeTree(target.id, 'revoke-accessor');
      return { status: 204 };
    }
    if (path === 'auth/token/revoke-orphan' && write) {
      if (typeof body.token !== 'string' || body.token === '') throw invalid('missing token ID');
      const target = this.#tokens.get(body.token);
      if (target && target.state === 'active') this.#revokeOrphan(target);
      return { status: 204 };
    }
    if (method === 'GET' && (m = path.match(/^database\/creds\/([^/]+)$/))) return this.#dynamicCreds(te, 'database', m[1]);
    if (method === 'GET' && (m = path.match(/^aws\/creds\/([^/]+)$/))) return this.#dynamicCreds(te, 'aws', m[1]);
    if (write && (m = path.match(/^sys\/leases\/revoke(?:\/(.+))?$/))) {
      const id = (typeof body.lease_id === 'string' && body.lease_id) || m[1] || '';
      if (!id) throw invalid('lease_id must be specified');
      const l = this.#leases.get(id);
      if (l && l.state === 'active') this.#endLease(l, 'revoked', 'sys/leases/revoke');
      return { status: 204 }; // Vault: an unknown lease is "nothing to revoke"
    }
    if (write && (m = path.match(/^sys\/leases\/revoke-prefix\/(.+)$/))) {
      for (const l of this.#leases.values()) if (l.state === 'active' && l.id.startsWith(m[1])) this.#endLease(l, 'revoked', 'revoke-prefix');
      return { status: 204 };
    }
    if (write && (path === 'sys/leases/renew' || path === 'sys/renew')) return this.#leaseRenew(body);
    if (write && path === 'sys/leases/lookup') return this.#leaseLookup(body);
    if ((m = path.match(/^secret\/data\/(.+)$/))) {
      if (method === 'GET') return this.#kvRead(m[1], query.version);
      if (write) return this.#kvWrite(m[1], body);
    }
    throw new VaultHttpError(404, [`no handler for route "${path}". route entry not found.`]);
  }

  // ------------------------------------------------------------ tokens

  #addRootToken(): void {
    this.#createTokenEntry({
      id: this.rootToken,
      policies: ['root'],
      parent: null,
      meta: null,
      displayName: 'root',
      path: 'auth/token/root',
      numUses: 0,
      ttlSec: 0,
      explicitMaxTtlSec: 0,
      renewable: false,
      period: 0,
    });
  }

  #createTokenEntry(p: {
    id?: string;
    policies: string[];
    parent: string | null;
    meta: Record<string, string> | null;
    displayName: string;
    path: string;
    numUses: number;
    ttlSec: number;
    explicitMaxTtlSec: number;
    renewable: boolean;
    period: number;
  }): TokenEntry {
    const id = p.id ?? `hvs.${rand62(24)}`;
    if (this.#tokens.get(id)?.state === 'active') throw invalid('cannot create a token with a duplicate ID');
    const now = this.now();
    const te: TokenEntry = {
      id,
      accessor: rand62(24),
      policies: p.policies,
      parent: p.parent,
      children: new Set(),
      orphan: p.parent === null,
      displayName: p.displayName,
      path: p.path,
      meta: p.meta,
      numUses: p.numUses,
      numUsesLimit: p.numUses,
      ttlSec: p.ttlSec,
      explicitMaxTtlSec: p.explicitMaxTtlSec,
      renewable: p.renewable,
      createdAtMs: now,
      expiresAtMs: p.ttlSec > 0 ? now + p.ttlSec * 1000 : null,
      state: 'active',
      period: p.period,
    };
    this.#tokens.set(id, te);
    this.#accessors.set(te.accessor, id);
    if (p.parent) this.#tokens.get(p.parent)?.children.add(id);
    return te;
  }

  #isSudo(te: TokenEntry, path: string): boolean {
    return this.#capabilities(te, path).has('sudo');
  }

  /** framework.CalculateTTL for token creation / login. */
  #calculateTtl(ttl: number, period: number, maxTtl: number, explicitMax: number, warnings: string[]): number {
    if (period > 0) return explicitMax > 0 && explicitMax < period ? explicitMax : period;
    let t = ttl === 0 ? this.defaultLeaseTtlSec : ttl;
    let max = maxTtl > 0 && maxTtl < this.maxLeaseTtlSec ? maxTtl : this.maxLeaseTtlSec;
    if (explicitMax > 0 && explicitMax < max) max = explicitMax;
    if (t > max) {
      warnings.push(`TTL of "${fmtDur(t)}" exceeded the effective max_ttl of "${fmtDur(max)}"; TTL value is capped accordingly`);
      t = max;
    }
    return t;
  }

  #tokenRoleWrite(name: string, body: Record<string, unknown>): { status: number } {
    const current = this.#tokenRoles.get(name);
    const list = (v: unknown, was: string[] | undefined): string[] | undefined => (v === undefined ? was : policiesParam(v));
    const explicitMax = body.token_explicit_max_ttl ?? body.explicit_max_ttl;
    this.addTokenRole(name, {
      allowedPolicies: list(body.allowed_policies, current?.allowedPolicies),
      disallowedPolicies: list(body.disallowed_policies, current?.disallowedPolicies),
      orphan: boolParam(body.orphan) ?? current?.orphan,
      renewable: boolParam(body.renewable) ?? current?.renewable,
      tokenExplicitMaxTtlSec: explicitMax === undefined ? current?.tokenExplicitMaxTtlSec : parseVaultDuration(explicitMax),
      tokenNoDefaultPolicy: boolParam(body.token_no_default_policy) ?? current?.tokenNoDefaultPolicy,
    });
    return { status: 204 };
  }

  #tokenRoleRead(name: string): { status: number; body: unknown } {
    const r = this.#tokenRoles.get(name);
    if (!r) throw new VaultHttpError(404, []);
    return {
      status: 200,
      body: {
        request_id: randomUUID(),
        lease_id: '',
        renewable: false,
        lease_duration: 0,
        data: {
          name: r.name,
          allowed_policies: r.allowedPolicies,
          disallowed_policies: r.disallowedPolicies,
          allowed_policies_glob: [],
          disallowed_policies_glob: [],
          orphan: r.orphan,
          renewable: r.renewable,
          path_suffix: '',
          token_explicit_max_ttl: r.tokenExplicitMaxTtlSec,
          explicit_max_ttl: r.tokenExplicitMaxTtlSec,
          token_no_default_policy: r.tokenNoDefaultPolicy,
          token_period: 0,
          token_type: 'default-service',
        },
        wrap_info: null,
        warnings: null,
        auth: null,
        mount_type: 'token',
      },
    };
  }

  /**
   * auth/token/create[-orphan|/:role_name], after Vault's handleCreateCommon (vault/token_store.go;
   * API: https://developer.hashicorp.com/vault/api-docs/auth/token). Without a role (or one with no
   * allowed/disallowed policies) a non-sudo caller may only pass on a subset of its own policies;
   * with a role that lists them, the role's allowed_policies bound the child instead, whatever the
   * caller holds. `default` is added unless no_default_policy (or the role's token_no_default_policy).
   */
  #tokenCreate(parent: TokenEntry, body: Record<string, unknown>, orphanPath: boolean, role?: TokenRole): { status: number; body: unknown } {
    if (parent.numUsesLimit > 0) throw invalid('restricted use token cannot generate child tokens');
    const createPath = role ? `auth/token/create/${role.name}` : orphanPath ? 'auth/token/create-orphan' : 'auth/token/create';
    const isSudo = this.#isSudo(parent, createPath);
    const requested = policiesParam(body.policies);
    const noDefault = boolParam(body.no_default_policy) ?? false;
    const noParent = boolParam(body.no_parent) ?? false;
    const numUses = intParam(body.num_uses, 'num_uses');
    if (numUses < 0) throw invalid('number of uses cannot be negative');
    if (body.type !== undefined && body.type !== '' && body.type !== 'service')
      throw invalid(body.type === 'batch' ? 'batch tokens are not supported by VaultDouble' : "invalid 'token_type' value");
    const warnings: string[] = [];

    let displayName = 'token';
    if (typeof body.display_name === 'string' && body.display_name !== '')
      displayName = `token-${body.display_name}`.replace(/[^a-zA-Z0-9-]/g, '-').replace(/-+$/, '');
    let id: string | undefined;
    if (typeof body.id === 'string' && body.id !== '') {
      if (!isSudo) throw invalid('root or sudo privileges required to specify token id');
      id = body.id;
    }

    // Policies, exactly as handleCreateCommon decides them.
    let policies: string[];
    let addDefault = false;
    if (role && (role.allowedPolicies.length > 0 || role.disallowedPolicies.length > 0)) {
      const localAddDefault = !noDefault && !role.tokenNoDefaultPolicy && !role.disallowedPolicies.includes('default');
      let final = requested.filter((p) => p.trim()).length ? sanitizePolicies(requested, localAddDefault) : [];
      if (role.allowedPolicies.length > 0) {
        const allowed = sanitizePolicies(role.allowedPolicies, localAddDefault);
        if (final.length === 0) final = allowed;
        else if (!isSubset(allowed, final))
          throw invalid(`token policies (${goQuoted(final)}) must be subset of the role's allowed policies (${goQuoted(allowed)}) or glob policies ([])`);
      } else if (final.length === 0) final = sanitizePolicies(parent.policies, localAddDefault);
      for (const p of final) if (role.disallowedPolicies.includes(p)) throw invalid(`token policy "${p}" is disallowed by this role`);
      policies = final;
    } else if (requested.filter((p) => p.trim()).length === 0) {
      policies = sanitizePolicies(parent.policies, false);
    } else if (!isSudo) {
      const input = sanitizePolicies(requested, false);
      const par = sanitizePolicies(parent.policies, false);
      if (!isSubset(par, input)) throw invalid('child policies must be subset of parent');
      policies = input;
      addDefault = !noDefault && parent.policies.includes('default');
    } else {
      policies = requested;
      addDefault = !noDefault;
    }
    policies = sanitizePolicies(policies, addDefault);
    if (noDefault) policies = policies.filter((p) => p !== 'default');
    if (policies.includes('root') && !parent.policies.includes('root')) throw invalid('root tokens may not be created without parent token being root');

    let parentId: string | null = parent.id;
    if (role) {
      if (role.orphan) parentId = null;
    } else if (noParent) {
      if (!isSudo) throw invalid('root or sudo privileges required to create orphan token');
      parentId = null;
    } else if (orphanPath) parentId = null;

    let explicitMax = parseVaultDuration(body.explicit_max_ttl);
    if (explicitMax < 0) throw invalid('explicit_max_ttl must be positive');
    if (role && role.tokenExplicitMaxTtlSec > 0) {
      if (explicitMax > 0) {
        explicitMax = Math.min(explicitMax, role.tokenExplicitMaxTtlSec);
        warnings.push(`Explicit max TTL specified both during creation call and in role; using the lesser value of ${explicitMax} seconds`);
      } else explicitMax = role.tokenExplicitMaxTtlSec;
    }
    const period = parseVaultDuration(body.period);
    if (period < 0) throw invalid('period must be positive');
    if (period > 0 && !isSudo) throw invalid('root or sudo privileges required to create periodic token');
    let ttl = parseVaultDuration(body.ttl ?? body.lease);
    if (ttl < 0) throw invalid('ttl must be positive');
    if (period > 0 || ttl > 0 || !policies.includes('root')) ttl = this.#calculateTtl(ttl, period, 0, explicitMax, warnings);
    if (ttl === 0 && explicitMax > 0) ttl = explicitMax;
    let renewable = boolParam(body.renewable) ?? true;
    if (role && !role.renewable) renewable = false;
    if (ttl === 0) {
      if (parent.expiresAtMs !== null) throw invalid('expiring root tokens cannot create non-expiring root tokens');
      renewable = false;
    }

    const te = this.#createTokenEntry({
      id,
      policies,
      parent: parentId,
      meta: metaParam(body.meta),
      displayName,
      path: createPath,
      numUses,
      ttlSec: ttl,
      explicitMaxTtlSec: explicitMax,
      renewable,
      period,
    });
    return { status: 200, body: this.#authResponse(te, 'token', warnings) };
  }

  #authResponse(te: TokenEntry, mountType: string, warnings: string[] = []): unknown {
    return {
      request_id: randomUUID(),
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data: null,
      wrap_info: null,
      warnings: warnings.length ? warnings : null,
      auth: {
        client_token: te.id,
        accessor: te.accessor,
        policies: te.policies,
        token_policies: te.policies,
        metadata: te.meta,
        lease_duration: te.ttlSec,
        renewable: te.renewable,
        entity_id: '',
        token_type: 'service',
        orphan: te.parent === null,
        mfa_requirement: null,
        num_uses: te.numUsesLimit,
      },
      mount_type: mountType,
    };
  }

  #tokenLookupResponse(te: TokenEntry): { status: number; body: unknown } {
    const now = this.now();
    return {
      status: 200,
      body: {
        request_id: randomUUID(),
        lease_id: '',
        renewable: false,
        lease_duration: 0,
        data: {
          accessor: te.accessor,
          creation_time: epochSec(te.createdAtMs),
          creation_ttl: te.ttlSec,
          display_name: te.displayName,
          entity_id: '',
          expire_time: te.expiresAtMs === null ? null : iso(te.expiresAtMs),
          explicit_max_ttl: te.explicitMaxTtlSec,
          id: te.id,
          issue_time: iso(te.createdAtMs),
          meta: te.meta,
          num_uses: te.numUses,
          orphan: te.parent === null,
          path: te.path,
          policies: te.policies,
          renewable: te.renewable,
          ttl: te.expiresAtMs === null ? 0 : Math.max(0, Math.floor((te.expiresAtMs - now) / 1000)),
          type: 'service',
        },
        wrap_info: null,
        warnings: null,
        auth: null,
        mount_type: 'token',
      },
    };
  }

  #tokenRenew(te: TokenEntry, incrementRaw: unknown): { status: number; body: unknown } {
    if (te.expiresAtMs === null) throw invalid('lease is not renewable');
    if (!te.renewable) throw invalid('lease is not renewable');
    const now = this.now();
    const warnings: string[] = [];
    let inc = parseVaultDuration(incrementRaw);
    if (te.period > 0) inc = te.period;
    if (inc <= 0) inc = te.ttlSec;
    // Max lifetime measured from creation: explicit max and the system max.
    let maxEnd = te.createdAtMs + this.maxLeaseTtlSec * 1000;
    if (te.explicitMaxTtlSec > 0) maxEnd = Math.min(maxEnd, te.createdAtMs + te.explicitMaxTtlSec * 1000);
    let end = now + inc * 1000;
    if (end > maxEnd) {
      end = maxEnd;
      warnings.push('TTL of the token exceeded its max TTL; capped');
    }
    te.expiresAtMs = end;
    te.ttlSec = Math.max(0, Math.floor((end - now) / 1000));
    return { status: 200, body: this.#authResponse(te, 'token', warnings) };
  }

  #byAccessor(accessor: unknown): TokenEntry {
    if (typeof accessor !== 'string' || accessor === '') throw invalid('missing accessor');
    const id = this.#accessors.get(accessor);
    const te = id === undefined ? undefined : this.#tokens.get(id);
    if (!te || te.state !== 'active') throw invalid('invalid accessor');
    return te;
  }

  /** Revoke a token, all its descendants, and every lease any of them owns. */
  #revokeTree(id: string, reason: string, state: TokenState = 'revoked'): void {
    const te = this.#tokens.get(id);
    if (!te || te.state !== 'active') return;
    for (const child of te.children) this.#revokeTree(child, `parent ${state}`);
    this.#endToken(te, state, reason);
  }

  #revokeOrphan(te: TokenEntry): void {
    for (const child of te.children) {
      const c = this.#tokens.get(child);
      if (c) {
        c.parent = null;
        c.orphan = true;
      }
    }
    te.children.clear();
    this.#endToken(te, 'revoked', 'revoke-orphan');
  }

  #endToken(te: TokenEntry, state: TokenState, reason: string): void {
    te.state = state;
    te.endedAtMs = this.now();
    te.endReason = reason;
    for (const l of this.#leases.values()) if (l.owner === te.id && l.state === 'active') this.#endLease(l, 'revoked', `token ${state}`);
  }

  #endLease(l: Lease, state: LeaseState, reason: string): void {
    l.state = state;
    l.endedAtMs = this.now();
    l.endReason = reason;
  }

  /** Lazy expiry: anything whose time is up by `now()` is gone, as Vault's expiration manager would have done. */
  #sweep(): void {
    const now = this.now();
    const expiring = [...this.#tokens.values()]
      .filter((t) => t.state === 'active' && t.expiresAtMs !== null && t.expiresAtMs <= now)
      .sort((a, b) => a.expiresAtMs! - b.expiresAtMs!);
    for (const t of expiring) this.#revokeTree(t.id, 'ttl expired', 'expired');
    for (const l of this.#leases.values()) if (l.state === 'active' && l.expiresAtMs <= now) this.#endLease(l, 'expired', 'ttl expired');
  }

  // ------------------------------------------------------------ logins

  #loginToken(
    policies: string[],
    o: { ttlSec?: number; maxTtlSec?: number; numUses?: number; noDefaultPolicy?: boolean },
    displayName: string,
    path: string,
    meta: Record<string, string>,
  ): TokenEntry {
    const final = sanitizePolicies(policies, !o.noDefaultPolicy);
    if (final.includes('root')) throw invalid('auth methods cannot create root tokens');
    const warnings: string[] = [];
    const ttl = this.#calculateTtl(o.ttlSec ?? 0, 0, o.maxTtlSec ?? 0, 0, warnings);
    return this.#createTokenEntry({
      policies: final,
      parent: null,
      meta,
      displayName,
      path,
      numUses: o.numUses ?? 0,
      ttlSec: ttl,
      explicitMaxTtlSec: 0,
      renewable: true,
      period: 0,
    });
  }

  #appRoleLogin(body: Record<string, unknown>): { status: number; body: unknown } {
    const roleId = typeof body.role_id === 'string' ? body.role_id : '';
    const secretId = typeof body.secret_id === 'string' ? body.secret_id : '';
    if (!roleId) throw invalid('missing role_id');
    const role = this.#appRoles.get(roleId);
    if (!role || role.secretId !== secretId) throw invalid('invalid role or secret ID');
    const name = role.opts.roleName ?? roleId;
    const te = this.#loginToken(role.policies, role.opts, 'approle', 'auth/approle/login', { role_name: name });
    return { status: 200, body: this.#authResponse(te, 'approle') };
  }

  #jwtLogin(body: Record<string, unknown>): { status: number; body: unknown } {
    const roleName = typeof body.role === 'string' ? body.role : '';
    const jwt = typeof body.jwt === 'string' ? body.jwt : '';
    if (!roleName) throw invalid('missing role');
    const role = this.#jwtRoles.get(roleName);
    if (!role) throw invalid(`role "${roleName}" could not be found`);
    if (!jwt) throw invalid('missing token');
    if (!role.verify(jwt)) throw invalid('error validating token: error verifying token signature: no known key successfully validated the token signature');
    const te = this.#loginToken(role.policies, role.opts, 'jwt', 'auth/jwt/login', { role: roleName });
    return { status: 200, body: this.#authResponse(te, 'jwt') };
  }

  // ------------------------------------------------------------ leases

  #dynamicCreds(te: TokenEntry, engine: 'database' | 'aws', roleName: string): { status: number; body: unknown } {
    const role = (engine === 'database' ? this.#dbRoles : this.#awsRoles).get(roleName);
    if (!role) throw invalid(engine === 'database' ? `unknown role: ${roleName}` : `Role "${roleName}" not found`);
    const warnings: string[] = [];
    const maxTtl = role.maxTtlSec ?? this.maxLeaseTtlSec;
    const ttl = this.#calculateTtl(role.defaultTtlSec, 0, maxTtl, 0, warnings);
    const now = this.now();
    const data: Record<string, unknown> =
      engine === 'database'
        ? {
            username: `v-${te.displayName.slice(0, 8)}-${roleName.slice(0, 8)}-${rand62(20)}-${epochSec(now)}`,
            password: `A1a-${rand62(16)}`,
          }
        : { access_key: `AKIA${rand62(16).toUpperCase()}`, secret_key: rand62(40), security_token: null };
    const lease: Lease = {
      id: `${engine}/creds/${roleName}/${rand62(24)}`,
      path: `${engine}/creds/${roleName}`,
      engine,
      role: roleName,
      owner: te.id,
      ownerAccessor: te.accessor,
      issuedAtMs: now,
      ttlSec: ttl,
      expiresAtMs: now + ttl * 1000,
      renewable: true,
      data,
      state: 'active',
      maxTtlSec: maxTtl,
    };
    this.#leases.set(lease.id, lease);
    return {
      status: 200,
      body: {
        request_id: randomUUID(),
        lease_id: lease.id,
        renewable: true,
        lease_duration: ttl,
        data,
        wrap_info: null,
        warnings: warnings.length ? warnings : null,
        auth: null,
        mount_type: engine,
      },
    };
  }

  #activeLease(body: Record<string, unknown>, unknownMsg: string): Lease {
    const id = typeof body.lease_id === 'string' ? body.lease_id : '';
    if (!id) throw invalid('lease_id must be specified');
    const l = this.#leases.get(id);
    if (!l || l.state !== 'active') throw invalid(unknownMsg);
    return l;
  }

  #leaseRenew(body: Record<string, unknown>): { status: number; body: unknown } {
    const l = this.#activeLease(body, 'lease not found');
    const now = this.now();
    const inc = parseVaultDuration(body.increment) || l.ttlSec;
    const maxEnd = l.issuedAtMs + l.maxTtlSec * 1000;
    const warnings: string[] = [];
    let end = now + inc * 1000;
    if (end > maxEnd) {
      end = maxEnd;
      warnings.push(
        `TTL of "${fmtDur(inc)}" exceeded the effective max_ttl of "${fmtDur(Math.floor((maxEnd - now) / 1000))}"; TTL value is capped accordingly`,
      );
    }
    l.expiresAtMs = end;
    l.ttlSec = Math.max(0, Math.floor((end - now) / 1000));
    return {
      status: 200,
      body: {
        request_id: randomUUID(),
        lease_id: l.id,
        renewable: true,
        lease_duration: l.ttlSec,
        data: null,
        wrap_info: null,
        warnings: warnings.length ? warnings : null,
        auth: null,
        mount_type: l.engine,
      },
    };
  }

  #leaseLookup(body: Record<string, unknown>): { status: number; body: unknown } {
    const l = this.#activeLease(body, 'invalid lease');
    return {
      status: 200,
      body: {
        request_id: randomUUID(),
        lease_id: '',
        renewable: false,
        lease_duration: 0,
        data: {
          expire_time: iso(l.expiresAtMs),
          id: l.id,
          issue_time: iso(l.issuedAtMs),
          last_renewal: null,
          renewable: l.renewable,
          ttl: Math.max(0, Math.floor((l.expiresAtMs - this.now()) / 1000)),
        },
        wrap_info: null,
        warnings: null,
        auth: null,
        mount_type: 'system',
      },
    };
  }

  // ------------------------------------------------------------ KV v2

  #kvMeta(v: KvVersion, version: number): Record<string, unknown> {
    return { created_time: iso(v.createdMs), custom_metadata: null, deletion_time: '', destroyed: false, version };
  }

  #kvRead(path: string, versionParam: string | undefined): { status: number; body: unknown } {
    const versions = this.#kv.get(path);
    const n = versionParam ? parseInt(versionParam, 10) : (versions?.length ?? 0);
    const v = versions?.[n - 1];
    if (!v) throw new VaultHttpError(404, []);
    return {
      status: 200,
      body: {
        request_id: randomUUID(),
        lease_id: '',
        renewable: false,
        lease_duration: 0,
        data: { data: { ...v.data }, metadata: this.#kvMeta(v, n) },
        wrap_info: null,
        warnings: null,
        auth: null,
        mount_type: 'kv',
      },
    };
  }

  #kvWrite(path: string, body: Record<string, unknown>): { status: number; body: unknown } {
    if (typeof body.data !== 'object' || body.data === null) throw invalid('no data provided');
    const cas = (body.options as { cas?: unknown } | undefined)?.cas;
    const current = this.#kv.get(path)?.length ?? 0;
    if (cas !== undefined && Number(cas) !== current) throw invalid('check-and-set parameter did not match the current version');
    const n = this.putKv(path, body.data as Record<string, unknown>);
    return {
      status: 200,
      body: {
        request_id: randomUUID(),
        lease_id: '',
        renewable: false,
        lease_duration: 0,
        data: this.#kvMeta(this.#kv.get(path)![n - 1], n),
        wrap_info: null,
        warnings: null,
        auth: null,
        mount_type: 'kv',
      },
    };
  }

  // ------------------------------------------------------------ sys

  #sealStatus(): Record<string, unknown> {
    return {
      type: 'shamir',
      initialized: true,
      sealed: this.sealed,
      t: 1,
      n: 1,
      progress: 0,
      nonce: '',
      version: '1.17.0',
      build_date: '2024-06-10T10:11:34Z',
      migration: false,
      recovery_seal: false,
      storage_type: 'inmem',
      ...(this.sealed ? {} : { cluster_name: 'vault-double', cluster_id: 'vault-double-cluster' }),
    };
  }

  #health(): { status: number; body: unknown } {
    return {
      status: this.sealed ? 503 : 200,
      body: {
        initialized: true,
        sealed: this.sealed,
        standby: false,
        performance_standby: false,
        replication_performance_mode: 'disabled',
        replication_dr_mode: 'disabled',
        server_time_utc: epochSec(Date.now()),
        version: '1.17.0',
        cluster_name: 'vault-double',
        cluster_id: 'vault-double-cluster',
      },
    };
  }
}

function fmtDur(sec: number): string {
  const h = Math.floor(sec / 3600);
  const m = Math.floor((sec % 3600) / 60);
  const s = sec % 60;
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${s}s`;
}
