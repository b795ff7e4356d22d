/**
 * Vault provider (node-vault over Vault's HTTP API).
 *
 * Every credential hangs under its own short-lived *parent* token:
 *
 *   broker token ──▶ parent (the broker's policies, ttl = explicit_max_ttl = the credential's life, never leaves the broker)
 *                      ├─▶ child token (exactly the policy's vault_policies)    — credential kind 'token'
 *                      └─▶ lease of a secret read with the parent (database/…, aws/…) — kind 'lease'
 *
 * The child holds only what the policy names: `no_default_policy` unless the credential says
 * `default_policy: true`. Vault lets a non-root token give a child only a subset of its own
 * policies, so with VAULT_TOKEN_ROLE the parent creates the child through
 * `auth/token/create/<role>`: the role's allowed_policies bound the child instead, and the broker
 * token never needs to hold (or be root to hand out) the agents' policies. The broker refuses to
 * run on a root token unless CORDON_VAULT_ALLOW_ROOT=1.
 *
 * The parent's accessor is written to the intent row (checkpoint) *before* anything an agent could
 * hold exists, so if the broker dies or loses Vault's answer, revoking that accessor takes down
 * whatever was created below it (Vault revokes children and the leases they own). The parent's
 * ttl also bounds dynamic-secret leases, whose own TTL is set by the Vault role and cannot be
 * asked for: when the parent expires, Vault revokes the lease. So `expires_at` is what Vault
 * enforces, never after the agent token's `exp`.
 *
 * Tokens go per request in X-Vault-Token; the node-vault client itself holds no token, so a
 * login never swaps the identity of calls in flight (why `tokenCreate` is not used).
 */
import vaultFactory from 'node-vault';
import type { VaultConfig } from '../config/index.ts';
import { CordonError, ConfigError } from '../errors.ts';
import {
  type CredentialProvider,
  type Handle,
  type IssuePlan,
  type IssueRequest,
  type IssueResult,
  type ProviderDeps,
  type ProviderHealth,
  type RevokeContext,
  type RevokeResult,
  type RevokeTarget,
  ProviderError,
} from './provider.ts';
import { vaultError } from './vault-errors.ts';
import { type KvIo, KV_NOT_REVOCABLE, readKv } from './vault-kv.ts';
import { ROOT_REFUSAL, type Login, type VaultAuth, logIn } from './vault-login.ts';

type VaultClient = ReturnType<typeof vaultFactory>;

/** Vault's answer when the thing to revoke is already gone (expired or revoked before). */
const ALREADY_GONE = /invalid accessor|invalid lease|lease not found|lease is not found|not found|token not found/i;
/** Vault truncates display names; ours name the credential. */
const displayName = (s: string): string => s.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 48);

export class VaultProvider implements CredentialProvider {
  readonly name = 'vault' as const;
  readonly #cfg: VaultConfig;
  readonly #deps: ProviderDeps;
  readonly #client: VaultClient;
  #login: Login | undefined;
  #loggingIn: Promise<Login> | undefined;
  #rootRefusalLogged = false;

  constructor(cfg: VaultConfig, deps: ProviderDeps) {
    this.#cfg = cfg;
    this.#deps = deps;
    this.#client = vaultFactory({ endpoint: cfg.addr, namespace: cfg.namespace, requestOptions: { timeout: cfg.timeoutMs } });
    // node-vault falls back to process.env.VAULT_TOKEN / VAULT_NAMESPACE; the broker decides both explicitly.
    this.#client.token = '';
    (this.#client as unknown as { namespace: string }).namespace = cfg.namespace ?? '';
  }

  async start(): Promise<void> {
    let l: Login;
    try {
      l = await this.#ensureLogin(0);
    } catch (e) {
      // Vault may come up after the broker: issuing answers 503 until the login works.
      this.#deps.log.warn({ err: (e as Error).message }, 'vault provider could not log in yet; credential requests answer 503 until it can');
      return;
    }
    // A root token is a configuration error, not an outage: stop start-up.
    if (this.#rootRefused(l)) throw new ConfigError(this.#loginVariable(), ROOT_REFUSAL);
    this.#deps.log.info(
      { method: this.#cfg.auth.method, policies: l.policies, expires_at: l.expiresAt, token_role: this.#cfg.tokenRole ?? null },
      'vault provider logged in',
    );
  }

  #rootRefused(l: Login): boolean {
    return l.root && !this.#cfg.allowRoot;
  }

  #loginVariable(): string {
    const m = this.#cfg.auth.method;
    return m === 'token' ? 'VAULT_TOKEN' : m === 'approle' ? 'VAULT_ROLE_ID' : 'VAULT_JWT_ROLE';
  }

  /** Vault was unreachable at start and the login later turned out root: refuse to issue, say why once. */
  #refuseRoot(l: Login): void {
    if (!this.#rootRefused(l)) return;
    const description = `${this.#loginVariable()} ${ROOT_REFUSAL}`;
    if (!this.#rootRefusalLogged) {
      this.#rootRefusalLogged = true;
      this.#deps.log.error({ variable: this.#loginVariable() }, `vault provider refuses to issue: ${description}`);
    }
    throw new ProviderError('vault', 'misconfigured', description);
  }

  // ------------------------------------------------------------------ plan / issue

  plan(req: IssueRequest): IssuePlan {
    const spec = req.spec;
    if (spec.provider !== 'vault') throw new Error('vault provider given a non-vault credential');
    // Never past the token's exp (the agent refreshes its token, then its credential); 1 s of slack for the round trip.
    let ttl = Math.min(spec.ttl, req.remainingSec.token - 1, req.remainingSec.session - 1);
    if (spec.explicit_max_ttl !== undefined) ttl = Math.min(ttl, spec.explicit_max_ttl);
    if (ttl < 1) throw new CordonError('invalid_token', 'token expires in less than 2 seconds: get a fresh token first', { reason: 'token_expiring' });
    return { ttlSec: ttl, expiresAtMax: req.now + ttl * 1000 + 1000 };
  }

  async issue(req: IssueRequest, plan: IssuePlan, checkpoint: (h: Handle) => Promise<void>): Promise<IssueResult> {
    const spec = req.spec;
    if (spec.provider !== 'vault') throw new Error('vault provider given a non-vault credential');
    const login = await this.#ensureLogin(plan.ttlSec);
    this.#refuseRoot(login);
    // A KV v2 secret is read, not made: with the broker's own token, and nothing below it to revoke.
    if (spec.kv !== undefined) return readKv(this.#kvIo(), spec.kv, login.token, req, plan.ttlSec);
    // The broker's own token bounds everything created below it.
    const brokerLeft = login.expiresAt === null ? Infinity : Math.floor((login.expiresAt - this.#deps.clock.now()) / 1000) - 1;
    const ttl = Math.min(plan.ttlSec, brokerLeft);
    if (ttl < 1) throw new ProviderError('vault', 'misconfigured', "the broker's own Vault token has expired and could not be renewed");
    const meta = {
      agent: req.session.agentId,
      session: req.session.sid,
      task: req.session.task ?? '',
      jti: req.claims.jti,
      holder: req.claims.client_id,
      credential: req.name,
      credential_id: req.credentialId,
    };

    // 1. The parent: never handed out; its accessor makes everything below it revocable.
    const sentParent = this.#deps.clock.now();
    const parentRes = await this.#call('auth/token/create', () =>
      this.#client.write(
        'auth/token/create',
        {
          policies: login.policies,
          ttl: `${ttl}s`,
          explicit_max_ttl: `${ttl}s`,
          renewable: false,
          display_name: displayName(`cordon-parent-${req.name}`),
          meta: { ...meta, cordon: 'parent' },
        },
        this.#as(login.token),
      ),
    );
    const parent = this.#auth(parentRes, 'auth/token/create');
    const parentExpires = sentParent + Math.min(parent.lease_duration || ttl, ttl) * 1000;
    await checkpoint({ kind: spec.vault_policies ? 'token' : 'lease', parent_accessor: parent.accessor });

    if (spec.vault_policies) {
      // 2a. The agent's child token: exactly the policy's Vault policies, dies with the parent at the latest.
      // Created BY the parent (through the token role when one is set), so it hangs under the parent.
      const createPath = this.#cfg.tokenRole ? `auth/token/create/${this.#cfg.tokenRole}` : 'auth/token/create';
      const sent = this.#deps.clock.now();
      const res = await this.#call(createPath, () =>
        this.#client.write(
          createPath,
          {
            policies: spec.vault_policies,
            no_default_policy: !spec.default_policy,
            ttl: `${ttl}s`,
            explicit_max_ttl: `${ttl}s`,
            renewable: false,
            ...(spec.num_uses !== undefined ? { num_uses: spec.num_uses } : {}),
            display_name: displayName(`cordon-${req.name}`),
            meta: { ...meta, cordon: 'credential' },
          },
          this.#as(parent.client_token),
        ),
      );
      const child = this.#auth(res, createPath);
      if (child.orphan === true) {
        // A role with orphan=true detaches the child from its parent: revoking the parent would not reach it.
        await this.#call('auth/token/revoke-accessor', () =>
          this.#client.write('auth/token/revoke-accessor', { accessor: child.accessor }, this.#as(login.token)),
        ).catch((e: unknown) => this.#deps.log.error({ err: (e as Error).message }, 'vault: could not revoke an orphan child token (it dies at its ttl)'));
        throw new ProviderError(
          'vault',
          'misconfigured',
          `the token role VAULT_TOKEN_ROLE=${this.#cfg.tokenRole} makes orphan tokens, which the broker could not revoke through their parent: set orphan=false on the role`,
        );
      }
      const expiresAt = Math.min(sent + (child.lease_duration || ttl) * 1000, parentExpires);
      return {
        credentials: {
          client_token: child.client_token,
          accessor: child.accessor,
          policies: child.policies ?? [],
          token_policies: child.token_policies ?? child.policies ?? [],
          lease_duration: child.lease_duration,
          renewable: child.renewable ?? false,
          ...(spec.num_uses !== undefined ? { num_uses: child.num_uses ?? spec.num_uses } : {}),
        },
        expiresAt,
        handle: { kind: 'token', parent_accessor: parent.accessor, accessor: child.accessor },
        details: { vault_policies: spec.vault_policies, ttl_sec: ttl, ...(spec.num_uses !== undefined ? { num_uses: spec.num_uses } : {}) },
      };
    }

    // 2b. A secret read with the parent: a dynamic secret's lease is owned by the parent and dies with it.
    const path = spec.path!;
    const sent = this.#deps.clock.now();
    const res = await this.#call(path, () => this.#client.read(path, this.#as(parent.client_token)));
    if (!res || typeof res !== 'object' || res.data === null || typeof res.data !== 'object')
      throw new ProviderError('vault', 'bad_answer', `Vault answered ${path} without data`);
    const leaseId = typeof res.lease_id === 'string' && res.lease_id !== '' ? (res.lease_id as string) : undefined;
    const isKv2 = !leaseId && res.data.data && typeof res.data.data === 'object' && res.data.metadata && typeof res.data.metadata === 'object';
    const credentials: Record<string, unknown> = isKv2 ? { ...res.data.data } : { ...res.data };
    if (spec.kv_path) {
      const kvPath = spec.kv_path;
      const kv = await this.#call(kvPath, () => this.#client.read(kvPath, this.#as(parent.client_token)));
      credentials.kv = kv?.data?.data ?? kv?.data ?? null;
    }
    const leaseSec = typeof res.lease_duration === 'number' && res.lease_duration > 0 ? res.lease_duration : ttl;
    const expiresAt = leaseId ? Math.min(sent + leaseSec * 1000, parentExpires) : parentExpires;
    return {
      credentials,
      expiresAt,
      leaseId,
      // Without a lease (KV v2, or any other static read) nothing was created: the value keeps working whatever the broker revokes.
      ...(leaseId ? {} : { static: true }),
      handle: { kind: leaseId ? 'lease' : 'static', parent_accessor: parent.accessor, ...(leaseId ? { lease_id: leaseId } : {}) },
      details: {
        path,
        ttl_sec: ttl,
        ...(leaseId ? { lease_duration: res.lease_duration } : { static: true }),
        ...(spec.kv_path ? { kv_path: spec.kv_path } : {}),
      },
    };
  }

  // ------------------------------------------------------------------ revoke

  async revoke(targets: RevokeTarget[], _ctx: RevokeContext): Promise<RevokeResult[]> {
    const out: RevokeResult[] = [];
    // Modest parallelism: a session rarely holds many credentials, and Vault should not be stampeded.
    for (let i = 0; i < targets.length; i += 8) out.push(...(await Promise.all(targets.slice(i, i + 8).map((t) => this.#revokeOne(t)))));
    return out;
  }

  async #revokeOne(t: RevokeTarget): Promise<RevokeResult> {
    const h = t.handle;
    if (h?.kind === 'static' && !h.parent_accessor) return { id: t.id, outcome: 'not_revocable', note: KV_NOT_REVOCABLE };
    if (!h || (!h.parent_accessor && !h.accessor && !h.lease_id))
      return { id: t.id, outcome: 'unknown', note: 'nothing was recorded to revoke (Vault answered before anything revocable existed, or not at all)' };
    let login: Login;
    try {
      login = await this.#ensureLogin(0);
    } catch (e) {
      return { id: t.id, outcome: 'failed', note: (e as Error).message, ...(e instanceof ProviderError ? { kind: e.kind } : {}) };
    }
    const done: string[] = [];
    const gone: string[] = [];
    const errors: ProviderError[] = [];
    // Every step is tried: one refused call (say a 403 on sys/leases/revoke) must not leave the others alive.
    const step = async (what: string, path: string, body: Record<string, unknown>): Promise<void> => {
      try {
        await this.#call(path, () => this.#client.write(path, body, this.#as(login.token)));
        done.push(what);
      } catch (e) {
        const err = e instanceof ProviderError ? e : this.#mapError(path, e);
        if (err.kind === 'refused' && ALREADY_GONE.test(err.description)) gone.push(what);
        else errors.push(new ProviderError('vault', err.kind, `${what}: ${err.description}`, e));
      }
    };
    if (typeof h.lease_id === 'string') await step('lease', 'sys/leases/revoke', { lease_id: h.lease_id });
    if (typeof h.accessor === 'string') await step('token', 'auth/token/revoke-accessor', { accessor: h.accessor });
    if (typeof h.parent_accessor === 'string') await step('parent', 'auth/token/revoke-accessor', { accessor: h.parent_accessor });
    // The per-credential parent owns the child token and the lease: once it is gone, Vault revokes them with it.
    const parentGone = typeof h.parent_accessor === 'string' && (done.includes('parent') || gone.includes('parent'));
    if (errors.length && !parentGone)
      return { id: t.id, outcome: 'failed', kind: errors[0].kind, note: `Vault revocation failed: ${errors.map((e) => e.description).join('; ')}` };
    const note = [
      done.length ? `revoked ${done.join(', ')}` : '',
      gone.length ? `${gone.join(', ')} already gone at Vault` : '',
      errors.length ? `${errors.map((e) => e.description).join('; ')} (Vault revokes it with the parent)` : '',
    ]
      .filter(Boolean)
      .join('; ');
    if (h.kind === 'static') {
      return {
        id: t.id,
        outcome: 'not_revocable',
        note: `a static (KV) secret cannot be revoked: the token that read it is ${done.includes('parent') ? 'revoked' : 'gone'}, but the value stays valid until it is rotated in Vault (${note})`,
      };
    }
    return { id: t.id, outcome: 'revoked', note };
  }

  // ------------------------------------------------------------------ health

  async health(): Promise<ProviderHealth> {
    try {
      const h = await this.#client.health({ requestOptions: { timeout: this.#cfg.timeoutMs } });
      if (h?.sealed) return { ok: false, detail: 'Vault is sealed' };
      const l = await this.#ensureLogin(0);
      if (this.#rootRefused(l)) return { ok: false, detail: `${this.#loginVariable()} ${ROOT_REFUSAL}` };
      return { ok: true, detail: 'Vault is unsealed and the broker is logged in' };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  }

  // ------------------------------------------------------------------ login

  /** A broker token with at least `minSec` left (renewed or re-obtained as needed), single-flight. */
  async #ensureLogin(minSec: number): Promise<Login> {
    const l = this.#login;
    const now = this.#deps.clock.now();
    if (l) {
      const left = l.expiresAt === null ? Infinity : l.expiresAt - now;
      // Renew at two thirds of the token's life, or earlier when a credential needs more than is left,
      // unless the token is fresh (a new one would not live longer: credentials are then capped by it).
      const fresh = left > (l.ttlSec * 1000 * 2) / 3;
      if (left > (l.ttlSec * 1000) / 3 && (left > minSec * 1000 + 5000 || fresh)) return l;
    }
    this.#loggingIn ??= this.#refresh(l, minSec).finally(() => {
      this.#loggingIn = undefined;
    });
    return this.#loggingIn;
  }

  async #refresh(current: Login | undefined, minSec: number): Promise<Login> {
    const now = (): number => this.#deps.clock.now();
    if (current?.renewable && current.expiresAt !== null) {
      try {
        const r = await this.#call('auth/token/renew-self', () => this.#client.write('auth/token/renew-self', {}, this.#as(current.token)));
        const a = r?.auth as VaultAuth | undefined;
        if (a && a.lease_duration > minSec + 5) {
          this.#login = { ...current, expiresAt: now() + a.lease_duration * 1000, ttlSec: a.lease_duration, renewable: a.renewable ?? current.renewable };
          return this.#login;
        }
      } catch (e) {
        this.#deps.log.warn({ err: (e as Error).message }, 'vault: renewing the broker token failed; logging in again');
      }
    }
    const login = await logIn(this.#cfg, {
      call: (op, fn, loginVar) => this.#call(op, fn, loginVar),
      read: (path, token) => this.#client.read(path, this.#as(token)),
      write: (path, body) => this.#client.write(path, body, { timeout: this.#cfg.timeoutMs }),
      authOf: (res, op) => this.#auth(res, op),
      now,
    });
    // Parents carry the broker's policies; a root broker (only with CORDON_VAULT_ALLOW_ROOT=1) makes root parents.
    login.root = login.policies.some((p) => p.trim().toLowerCase() === 'root');
    login.policies = login.root ? ['root'] : login.policies.filter((p) => p !== 'default');
    if (!login.policies.length) login.policies = ['default'];
    this.#login = login;
    return login;
  }

  // ------------------------------------------------------------------ plumbing

  #as(token: string): { headers: Record<string, string>; timeout: number } {
    return { headers: { 'X-Vault-Token': token }, timeout: this.#cfg.timeoutMs };
  }

  #kvIo(): KvIo {
    return { call: (op, fn) => this.#call(op, fn), read: (path, token) => this.#client.read(path, this.#as(token)), now: () => this.#deps.clock.now() };
  }

  #auth(res: unknown, op: string): VaultAuth {
    const a = (res as { auth?: VaultAuth } | undefined)?.auth;
    if (!a || typeof a.client_token !== 'string' || typeof a.accessor !== 'string' || !a.client_token || !a.accessor)
      throw new ProviderError('vault', 'bad_answer', `Vault answered ${op} without a token and accessor`);
    return a;
  }

  /** Runs one Vault call and maps its failure to a ProviderError with a clear, secret-free description. */
  async #call<T>(op: string, fn: () => Promise<T>, loginVar?: string): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.#mapError(op, e, loginVar);
    }
  }

  #mapError(op: string, e: unknown, loginVar?: string): ProviderError {
    return vaultError(op, e, this.#cfg.timeoutMs, loginVar);
  }
}
