import { createPrivateKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SignJWT, decodeJwt, importJWK, type CryptoKey, type JWK } from 'jose';
import { CordonSdkError } from './errors.ts';
import { DpopKey, type DpopAlg } from './dpop.ts';
import { requestJson, isObject, type FetchLike, type HttpOptions } from './http.ts';

export const TOKEN_TYPE_ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const TOKEN_TYPE_BOOTSTRAP = 'urn:cordon:token-type:bootstrap';
export const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
/** The public client a workload without a static secret presents with its bootstrap or federated token. */
export const WORKLOAD_CLIENT_ID = 'cordon-workload';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** Milliseconds since the epoch; inject one in tests (the broker's ManualClock fits). */
export interface SdkClock {
  now(): number;
}

export type ClientKeyAlg = 'ES256' | 'EdDSA' | 'RS256' | 'PS256';

export interface CordonAgentOptions {
  /** The broker's issuer URL, base of every endpoint. */
  issuer: string;
  clientId?: string;
  /** client_secret_basic. */
  clientSecret?: string;
  /** private_key_jwt: a private JWK, a PKCS#8 PEM, or a CryptoKey (then give `privateKeyAlg`). */
  privateKey?: CryptoKey | JWK | string;
  privateKeyAlg?: ClientKeyAlg;
  privateKeyKid?: string;
  /** A one-time bootstrap token (`cordon agent bootstrap`), exchanged at session start. */
  bootstrapToken?: string;
  /** A file holding an external JWT (Kubernetes projected token, CI OIDC token); re-read at each exchange. */
  federatedTokenFile?: string;
  /** An access token handed over by an orchestrator (or `cordon exec`); used until it expires. */
  accessToken?: string;
  /** `cordon exec`'s local token endpoint and its authorization value: fresh tokens without any secret. */
  tokenUri?: string;
  tokenAuthorization?: string;
  /** `true` generates an ephemeral key; tokens are then DPoP-bound (RFC 9449). */
  dpop?: boolean | DpopKey;
  fetch?: FetchLike;
  clock?: SdkClock;
  /** [0,1) source for refresh jitter. */
  random?: () => number;
  timeoutMs?: number;
  /** Credentials are re-fetched this long before they expire (or at 3/4 of their life when shorter). Default 60. */
  credentialMarginSec?: number;
}

export interface StartSessionRequest {
  scope: string | string[];
  task?: string;
  audience?: string | string[];
  /** Ask for shorter tokens than the policy's token_ttl. */
  expiresIn?: number;
}

export interface SessionInfo {
  sid: string;
  scope: string[];
  task?: string;
  /** When the session ends for good (ms since the epoch), when the broker said. */
  expiresAt: number | null;
  tokenType: 'Bearer' | 'DPoP';
}

export interface DelegateRequest {
  /** The sub-agent's client_id (or name). */
  to: string;
  scope: string | string[];
  audience?: string | string[];
  /** Bind the sub-agent's token to its DPoP key (JWK thumbprint). */
  dpopJkt?: string;
  /** `intersect` trims to what the bounds allow instead of being refused. */
  scopePolicy?: 'intersect';
  expiresIn?: number;
}

export interface DelegatedToken {
  accessToken: string;
  tokenType: 'Bearer' | 'DPoP';
  expiresIn: number;
  /** ms since the epoch, on the agent's clock. */
  expiresAt: number;
  scope: string[];
  sid: string;
}

export interface BackendCredential {
  name: string;
  provider: string;
  expiresAt: Date;
  leaseId?: string;
  /** A static secret (Vault KV): revoking the session kills the token that read it, not the value; `expiresAt` is when to re-read it. */
  static?: boolean;
  credentials: Record<string, unknown>;
}

/** The shape AWS SDK v3 clients take as `credentials` (AwsCredentialIdentityProvider). */
export interface AwsCredentialIdentity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}
export type AwsCredentialProvider = () => Promise<AwsCredentialIdentity>;

type Mode = 'secret' | 'private_key_jwt' | 'bootstrap' | 'federated' | 'handed' | 'local';

interface CurrentToken {
  accessToken: string;
  tokenType: 'Bearer' | 'DPoP';
  issuedAt: number;
  expiresAt: number;
  refreshAt: number;
  scope: string[];
}

interface Session {
  sid: string;
  scope: string[];
  task?: string;
  audience: string[];
  expiresIn?: number;
  expiresAt: number | null;
  current: CurrentToken;
  /** Every token the agent was issued in this session and that may still be alive, for revoke(). */
  issued: Array<{ token: string; expiresAt: number }>;
  ended: CordonSdkError | null;
  /**
   * When the session's tokens are for resource servers only: a token of the same session whose
   * audience is the broker, used for /credentials alone and never sent anywhere else.
   */
  brokerToken?: CurrentToken;
  brokerTokenInFlight?: Promise<CurrentToken>;
}

interface TokenAnswer {
  accessToken: string;
  tokenType: 'Bearer' | 'DPoP';
  expiresIn: number;
  scope?: string[];
  sid: string;
  sessionExpiresAt?: number;
}

const JWS_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;
const CRED_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** revoke() ends the session with a token that has at least this long to live (the request takes a moment, clocks differ). */
const REVOKE_MARGIN_MS = 5000;
const splitScope = (s: string | string[]): string[] => (Array.isArray(s) ? s : s.split(' ')).map((x) => x.trim()).filter(Boolean);
const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/**
 * An agent's client for the Cordon broker. It opens one session, keeps a fresh token for it
 * (asking again with `session=<sid>` before expiry, never past the session's end), delegates,
 * fetches backend credentials and revokes what it holds when done.
 *
 * ```ts
 * const agent = CordonAgent.fromEnv();
 * await agent.startSession({ scope: 'tickets:read cred:reports-s3', task: 'TICKET-1' });
 * const s3 = new S3Client({ credentials: agent.awsCredentials('reports-s3') });
 * …
 * await agent.close();
 * ```
 */
export class CordonAgent {
  readonly issuer: string;
  readonly clientId?: string;
  readonly mode: Mode;
  readonly #opts: CordonAgentOptions;
  readonly #http: HttpOptions;
  readonly #clock: SdkClock;
  readonly #random: () => number;
  #dpop: DpopKey | null | Promise<DpopKey> = null;
  #clientKey: Promise<{ key: CryptoKey; alg: ClientKeyAlg; kid?: string }> | null = null;
  #session: Session | null = null;
  #refreshing: Promise<void> | null = null;
  #creds = new Map<string, { value: BackendCredential; fetchedAt: number }>();
  #credsInFlight = new Map<string, Promise<BackendCredential>>();
  #closed = false;

  constructor(opts: CordonAgentOptions) {
    if (!opts.issuer) throw new CordonSdkError('config', 'issuer is required (CORDON_ISSUER)');
    let u: URL;
    try {
      u = new URL(opts.issuer);
    } catch {
      throw new CordonSdkError('config', `issuer is not a URL: ${JSON.stringify(opts.issuer)}`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new CordonSdkError('config', 'issuer must be an http(s) URL');
    this.issuer = opts.issuer.replace(/\/+$/, '');
    this.#opts = opts;
    this.clientId = opts.clientId;
    this.#http = { fetch: opts.fetch ?? ((input, init) => fetch(input, init)), timeoutMs: opts.timeoutMs ?? 10_000 };
    this.#clock = opts.clock ?? { now: () => Date.now() };
    this.#random = opts.random ?? Math.random;
    if (opts.dpop instanceof DpopKey) this.#dpop = opts.dpop;
    else if (opts.dpop === true) this.#dpop = DpopKey.generate();

    if (opts.tokenUri) {
      if (!opts.tokenAuthorization) throw new CordonSdkError('config', 'tokenUri needs tokenAuthorization (CORDON_TOKEN_AUTHORIZATION)');
      this.mode = 'local';
    } else if (opts.clientSecret !== undefined || opts.privateKey !== undefined) {
      if (!opts.clientId) throw new CordonSdkError('config', 'clientId is required with a client secret or private key (CORDON_CLIENT_ID)');
      if (opts.clientSecret !== undefined && opts.privateKey !== undefined) throw new CordonSdkError('config', 'give a client secret or a private key, not both');
      this.mode = opts.clientSecret !== undefined ? 'secret' : 'private_key_jwt';
    } else if (opts.bootstrapToken !== undefined) {
      this.mode = 'bootstrap';
    } else if (opts.federatedTokenFile !== undefined) {
      this.mode = 'federated';
    } else if (opts.accessToken !== undefined) {
      this.mode = 'handed';
    } else {
      throw new CordonSdkError('config', 'no credentials: give a client secret, a private key, a bootstrap token, a federated token file or an access token (CORDON_CLIENT_SECRET, CORDON_PRIVATE_KEY_FILE, CORDON_BOOTSTRAP_TOKEN, CORDON_FEDERATED_TOKEN_FILE, CORDON_TOKEN)');
    }
    if (this.mode === 'handed') this.#adoptHandedToken(opts.accessToken!);
  }

  /**
   * From the environment: CORDON_ISSUER, CORDON_CLIENT_ID with CORDON_CLIENT_SECRET or
   * CORDON_PRIVATE_KEY_FILE, or CORDON_BOOTSTRAP_TOKEN, or CORDON_FEDERATED_TOKEN_FILE; under
   * `cordon exec`, CORDON_TOKEN_URI/CORDON_TOKEN_AUTHORIZATION; a handed-over CORDON_TOKEN.
   * CORDON_DPOP=1 binds tokens to an ephemeral DPoP key. `overrides` win over the environment.
   */
  static fromEnv(env: Record<string, string | undefined> = process.env, overrides: Partial<CordonAgentOptions> = {}): CordonAgent {
    const e = (k: string): string | undefined => {
      const v = env[k];
      return v === undefined || v.trim() === '' ? undefined : v.trim();
    };
    const opts: CordonAgentOptions = { issuer: e('CORDON_ISSUER') ?? '' };
    if (e('CORDON_CLIENT_ID')) opts.clientId = e('CORDON_CLIENT_ID');
    if (e('CORDON_TOKEN_URI')) {
      opts.tokenUri = e('CORDON_TOKEN_URI');
      opts.tokenAuthorization = e('CORDON_TOKEN_AUTHORIZATION');
    } else if (e('CORDON_CLIENT_SECRET')) opts.clientSecret = e('CORDON_CLIENT_SECRET');
    else if (e('CORDON_PRIVATE_KEY_FILE')) {
      const file = e('CORDON_PRIVATE_KEY_FILE')!;
      try {
        opts.privateKey = readFileSync(file, 'utf8');
      } catch (err) {
        throw new CordonSdkError('config', `CORDON_PRIVATE_KEY_FILE: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    } else if (e('CORDON_BOOTSTRAP_TOKEN')) opts.bootstrapToken = e('CORDON_BOOTSTRAP_TOKEN');
    else if (e('CORDON_FEDERATED_TOKEN_FILE')) opts.federatedTokenFile = e('CORDON_FEDERATED_TOKEN_FILE');
    if (e('CORDON_TOKEN') && !opts.tokenUri) opts.accessToken = e('CORDON_TOKEN');
    if (/^(1|true|yes)$/i.test(e('CORDON_DPOP') ?? '')) opts.dpop = true;
    return new CordonAgent({ ...opts, ...overrides });
  }

  /** The DPoP key's thumbprint, when the agent has one (give it to an orchestrator as `dpopJkt`). */
  async dpopJkt(): Promise<string | undefined> {
    return (await this.#dpopKey())?.jkt;
  }

  /** The open session, if any. */
  get session(): SessionInfo | null {
    const s = this.#session;
    if (!s) return null;
    return { sid: s.sid, scope: [...s.scope], task: s.task, expiresAt: s.expiresAt, tokenType: s.current.tokenType };
  }

  /** Opens a session for a task (client_credentials, or a bootstrap/federated token exchange). */
  async startSession(req: StartSessionRequest): Promise<SessionInfo> {
    this.#ensureOpen();
    if (this.#session && !this.#session.ended) throw new CordonSdkError('config', `a session (${this.#session.sid}) is already open: revoke() or close() it first`);
    if (this.mode === 'handed' || this.mode === 'local') throw new CordonSdkError('unsupported', `an agent running on ${this.mode === 'local' ? "cordon exec's token endpoint" : 'a handed-over token'} cannot open sessions`);
    const scope = splitScope(req.scope);
    if (!scope.length) throw new CordonSdkError('config', 'scope is required: a session is opened for named scopes only');
    const audience = list(req.audience);
    const form: Array<[string, string]> = [['scope', scope.join(' ')]];
    if (req.task !== undefined) form.push(['task', req.task]);
    for (const a of audience) form.push(['audience', a]);
    if (req.expiresIn !== undefined) form.push(['expires_in', String(req.expiresIn)]);
    let answer: TokenAnswer;
    if (this.mode === 'bootstrap' || this.mode === 'federated') {
      form.push(['grant_type', GRANT_TOKEN_EXCHANGE], ...this.#subjectTokenParams());
      answer = await this.#tokenRequest(form, 'session start', { endSession: true });
    } else {
      form.push(['grant_type', 'client_credentials']);
      answer = await this.#tokenRequest(form, 'session start', { endSession: true });
    }
    const now = this.#clock.now();
    this.#session = {
      sid: answer.sid,
      scope: answer.scope ?? scope,
      task: req.task,
      audience,
      expiresIn: req.expiresIn,
      expiresAt: answer.sessionExpiresAt ?? null,
      current: this.#current(answer, now, answer.sessionExpiresAt ?? null),
      issued: [{ token: answer.accessToken, expiresAt: now + answer.expiresIn * 1000 }],
      ended: null,
    };
    this.#creds.clear();
    return this.session!;
  }

  /**
   * A token that is valid now. Asked again before expiry (with jitter); never past the session's
   * end. Fails with `session_ended` once the session has ended or been revoked.
   */
  async token(): Promise<string> {
    return (await this.#fresh()).accessToken;
  }

  /** Like `token()`, with its type and when it expires (ms since the epoch, on the agent's clock). */
  async tokenInfo(): Promise<{ accessToken: string; tokenType: 'Bearer' | 'DPoP'; expiresAt: number; sid: string }> {
    const t = await this.#fresh();
    return { accessToken: t.accessToken, tokenType: t.tokenType, expiresAt: t.expiresAt, sid: this.#session!.sid };
  }

  /** `Authorization` (and `DPoP`) headers for a request to a resource server. */
  async authorizationHeaders(method: string, url: string): Promise<Record<string, string>> {
    const t = await this.#fresh();
    const h: Record<string, string> = { authorization: `${t.tokenType} ${t.accessToken}` };
    if (t.tokenType === 'DPoP') {
      const key = await this.#dpopKey();
      if (!key) throw new CordonSdkError('config', 'the token is DPoP-bound but this agent has no DPoP key');
      h.dpop = await key.proof(method, url, { nowMs: this.#clock.now(), accessToken: t.accessToken });
    }
    return h;
  }

  /** `fetch` with the agent's current token (and a DPoP proof when bound). */
  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const method = (init.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries(await this.authorizationHeaders(method, url))) headers.set(k, v);
    return this.#http.fetch(url, { ...init, method, headers });
  }

  /** RFC 8693 delegation: an attenuated token for a sub-agent, in this session. */
  async delegate(req: DelegateRequest): Promise<DelegatedToken> {
    const t = await this.#fresh();
    const scope = splitScope(req.scope);
    if (!scope.length) throw new CordonSdkError('config', 'scope is required for a delegation');
    if (!req.to) throw new CordonSdkError('config', 'to (the sub-agent client_id) is required');
    const form: Array<[string, string]> = [
      ['grant_type', GRANT_TOKEN_EXCHANGE],
      ['subject_token', t.accessToken],
      ['subject_token_type', TOKEN_TYPE_ACCESS],
      ['requested_actor', req.to],
      ['scope', scope.join(' ')],
    ];
    for (const a of list(req.audience)) form.push(['audience', a]);
    if (req.dpopJkt !== undefined) form.push(['dpop_jkt', req.dpopJkt]);
    if (req.scopePolicy !== undefined) form.push(['scope_policy', req.scopePolicy]);
    if (req.expiresIn !== undefined) form.push(['expires_in', String(req.expiresIn)]);
    // A DPoP-bound subject token needs a proof; the delegated token is bound only when dpopJkt asks for it.
    const a = await this.#tokenRequest(form, 'delegation', { dpop: t.tokenType === 'DPoP', bound: req.dpopJkt !== undefined });
    return { accessToken: a.accessToken, tokenType: a.tokenType, expiresIn: a.expiresIn, expiresAt: this.#clock.now() + a.expiresIn * 1000, scope: a.scope ?? scope, sid: a.sid };
  }

  /** Backend credentials (`POST /credentials/:name`), cached until shortly before they expire. */
  async credentials(name: string): Promise<BackendCredential> {
    this.#ensureOpen();
    if (!CRED_NAME.test(name)) throw new CordonSdkError('config', `credential name ${JSON.stringify(name.slice(0, 80))} is malformed`);
    // Once the session is known to have ended, nothing cached from it is handed out.
    if (this.#session?.ended) throw this.#session.ended;
    const now = this.#clock.now();
    const hit = this.#creds.get(name);
    if (hit) {
      const life = hit.value.expiresAt.getTime() - hit.fetchedAt;
      const margin = Math.min((this.#opts.credentialMarginSec ?? 60) * 1000, life / 4);
      if (now < hit.value.expiresAt.getTime() - margin) return hit.value;
    }
    let p = this.#credsInFlight.get(name);
    if (!p) {
      p = this.#fetchCredentials(name).finally(() => this.#credsInFlight.delete(name));
      this.#credsInFlight.set(name, p);
    }
    return p;
  }

  /**
   * An AWS SDK v3 credential provider for an `aws-sts` credential:
   * `new S3Client({ credentials: agent.awsCredentials('reports-s3') })`. The SDK calls it again
   * when the keys near expiry; the agent answers from its cache or asks the broker.
   */
  awsCredentials(name: string): AwsCredentialProvider {
    return async () => {
      const c = await this.credentials(name);
      return toAwsIdentity(c);
    };
  }

  /**
   * Revokes every token this agent was issued in the session that may still be alive (the broker
   * revokes everything delegated from them), then refuses further use of the session.
   *
   * With a client credential (secret or private_key_jwt) the whole session is ended
   * (`end_session=true`), even when every token it holds has expired: the broker ignores an
   * expired token at /revoke, so the agent first asks for a short-lived token of the session
   * (`session=<sid>`) and ends the session with that one. A refused renewal (`invalid_grant`)
   * means the session has already ended. A bootstrap or federated agent cannot renew, so once
   * its last token has expired it cannot end the session: what is left in it (STS credentials)
   * lives until the session's end, when the broker's sweeper revokes it. Call `close()` before
   * the token expires.
   */
  async revoke(): Promise<void> {
    const s = this.#session;
    if (!s) return;
    if (!s.ended) s.ended = new CordonSdkError('session_ended', `session ${s.sid} was revoked by this agent`);
    this.#creds.clear();
    if (this.mode === 'local' || (this.mode === 'handed' && !this.#canAuthenticate())) {
      s.issued = [];
      return; // the holder of the secret revokes (cordon exec does when the command exits)
    }
    const now = this.#clock.now();
    const live = s.issued.filter((t) => t.expiresAt > now);
    // Ending the whole session (not just our tokens) means nobody can renew it with `session=<sid>` later.
    if (this.mode !== 'handed') {
      const usable = live.filter((t) => t.expiresAt > now + REVOKE_MARGIN_MS).sort((x, y) => x.expiresAt - y.expiresAt).at(-1);
      let token = usable?.token;
      if (!token && this.#canRenew()) {
        if (s.expiresAt !== null && now >= s.expiresAt) {
          s.issued = []; // the session is over at the broker too
          return;
        }
        try {
          const a = await this.#renewal(s, 'revocation: token for ending the session', { expiresIn: 60 });
          token = a.accessToken;
          s.issued.push({ token, expiresAt: now + a.expiresIn * 1000 });
        } catch (e) {
          if (e instanceof CordonSdkError && e.code === 'oauth' && e.error === 'invalid_grant') {
            s.issued = []; // the broker will not renew it: the session has already ended (revoked or expired)
            return;
          }
          throw e;
        }
      }
      // Bootstrap/federated with only nearly expired tokens: try the freshest one anyway.
      token ??= live.sort((x, y) => x.expiresAt - y.expiresAt).at(-1)?.token;
      if (token) await this.#revokeToken(token, true);
      s.issued = [];
      return;
    }
    let firstError: unknown = null;
    for (const t of live) {
      try {
        await this.#revokeToken(t.token);
        s.issued = s.issued.filter((x) => x !== t);
      } catch (e) {
        firstError ??= e;
      }
    }
    if (firstError) throw firstError;
  }

  /** Revokes the session (when one is open) and refuses any further call. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      if (this.#session) await this.revoke();
    } finally {
      this.#closed = true;
    }
  }

  // ---- internals ----

  #ensureOpen(): void {
    if (this.#closed) throw new CordonSdkError('closed', 'this CordonAgent has been closed');
  }

  #canAuthenticate(): boolean {
    return this.#opts.clientSecret !== undefined || this.#opts.privateKey !== undefined;
  }

  async #dpopKey(): Promise<DpopKey | null> {
    if (this.#dpop === null) return null;
    this.#dpop = await this.#dpop;
    return this.#dpop;
  }

  #adoptHandedToken(jwt: string): void {
    if (!JWS_SHAPE.test(jwt)) throw new CordonSdkError('config', 'the handed-over access token is not a JWT');
    let claims: Record<string, unknown>;
    try {
      claims = decodeJwt(jwt);
    } catch {
      throw new CordonSdkError('config', 'the handed-over access token cannot be decoded');
    }
    if (typeof claims.exp !== 'number' || typeof claims.sid !== 'string') throw new CordonSdkError('config', 'the handed-over access token has no exp or sid');
    const cnf = claims.cnf as { jkt?: string } | undefined;
    const expiresAt = claims.exp * 1000;
    const now = this.#clock.now();
    this.#session = {
      sid: claims.sid,
      scope: typeof claims.scope === 'string' ? splitScope(claims.scope) : [],
      task: typeof claims.task === 'string' ? claims.task : undefined,
      audience: [],
      expiresAt: null, // the session's end is not in the token; its own exp is the limit here
      current: { accessToken: jwt, tokenType: cnf?.jkt ? 'DPoP' : 'Bearer', issuedAt: now, expiresAt, refreshAt: Infinity, scope: typeof claims.scope === 'string' ? splitScope(claims.scope) : [] },
      issued: [{ token: jwt, expiresAt }],
      ended: null,
    };
  }

  /** When to ask again: a fifth of the token's life before expiry (10 s to 5 min), plus up to 25 % jitter. */
  #current(a: TokenAnswer, now: number, sessionEnd: number | null): CurrentToken {
    let expiresAt = now + a.expiresIn * 1000;
    if (sessionEnd !== null) expiresAt = Math.min(expiresAt, sessionEnd);
    const life = Math.max(0, expiresAt - now);
    const margin = Math.min(Math.max(life * 0.2, 10_000), 300_000, life / 2) * (1 + 0.25 * this.#random());
    // A token that already reaches the session's end cannot be bettered: use it to the end.
    const lastOne = sessionEnd !== null && expiresAt >= sessionEnd - 1000;
    return { accessToken: a.accessToken, tokenType: a.tokenType, issuedAt: now, expiresAt, refreshAt: lastOne ? Infinity : expiresAt - margin, scope: a.scope ?? [] };
  }

  async #fresh(): Promise<CurrentToken> {
    this.#ensureOpen();
    if (!this.#session && this.mode === 'local') await this.#singleRefresh();
    const s = this.#session;
    if (!s) throw new CordonSdkError('no_session', 'no session: call startSession() first');
    if (s.ended) throw s.ended;
    const now = this.#clock.now();
    if (s.expiresAt !== null && now >= s.expiresAt) {
      s.ended = new CordonSdkError('session_ended', `session ${s.sid} has reached its end`);
      throw s.ended;
    }
    if (now < s.current.refreshAt && now < s.current.expiresAt - 1000) return s.current;
    if (!this.#canRenew()) {
      if (now < s.current.expiresAt - 1000) return s.current;
      s.ended = new CordonSdkError('session_ended', this.mode === 'handed' ? 'the handed-over token has expired; ask the orchestrator for another' : `the token of this ${this.mode} session has expired and cannot be renewed without a client credential; call startSession() again`);
      throw s.ended;
    }
    try {
      await this.#singleRefresh();
    } catch (e) {
      if (e instanceof CordonSdkError && e.code === 'session_ended') throw e;
      // A broker hiccup while the current token still has life left: keep using it, ask again next time.
      const retryable = brokerHiccup(e);
      if (retryable && this.#clock.now() < s.current.expiresAt - 1000) return s.current;
      throw e;
    }
    if (s.ended) throw s.ended;
    return s.current;
  }

  /** One refresh at a time: concurrent callers share it. */
  #singleRefresh(): Promise<void> {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  #canRenew(): boolean {
    // A bootstrap token opens one session only, and the broker renews workload sessions only by a new exchange (a new session).
    return this.mode === 'secret' || this.mode === 'private_key_jwt' || this.mode === 'local';
  }

  async #refresh(): Promise<void> {
    if (this.mode === 'local') return this.#refreshLocal();
    const s = this.#session!;
    let a: TokenAnswer;
    try {
      a = await this.#renewal(s, 'token refresh');
    } catch (e) {
      if (e instanceof CordonSdkError && e.code === 'oauth' && e.error === 'invalid_grant') throw this.#ended(s, e);
      throw e;
    }
    const now = this.#clock.now();
    if (a.sessionExpiresAt !== undefined) s.expiresAt = s.expiresAt === null ? a.sessionExpiresAt : Math.min(s.expiresAt, a.sessionExpiresAt);
    s.current = this.#current(a, now, s.expiresAt);
    s.issued = s.issued.filter((t) => t.expiresAt > now);
    s.issued.push({ token: a.accessToken, expiresAt: now + a.expiresIn * 1000 });
  }

  /** A new token of the open session (`session=<sid>`), refused with `invalid_grant` once the session has ended. */
  async #renewal(s: Session, what: string, opts: { expiresIn?: number; audience?: string[] } = {}): Promise<TokenAnswer> {
    const form: Array<[string, string]> = [['scope', s.scope.join(' ')], ['session', s.sid]];
    for (const a of opts.audience ?? s.audience) form.push(['audience', a]);
    const expiresIn = opts.expiresIn !== undefined && s.expiresIn !== undefined ? Math.min(opts.expiresIn, s.expiresIn) : (opts.expiresIn ?? s.expiresIn);
    if (expiresIn !== undefined) form.push(['expires_in', String(expiresIn)]);
    form.push(['grant_type', 'client_credentials']);
    const a = await this.#tokenRequest(form, what);
    if (a.sid !== s.sid) {
      // The broker opened another session instead of renewing this one: do not drift into it.
      await this.#revokeToken(a.accessToken, true).catch(() => {});
      throw new CordonSdkError('bad_response', `${what}: the broker answered for session ${a.sid}, not ${s.sid}`);
    }
    return a;
  }

  async #refreshLocal(): Promise<void> {
    const { body } = await requestJson(this.#http, this.#opts.tokenUri!, { method: 'GET', headers: { authorization: this.#opts.tokenAuthorization! } }, 'local token endpoint').catch((e) => {
      if (e instanceof CordonSdkError && e.code === 'oauth' && (e.error === 'invalid_grant' || e.error === 'session_ended')) {
        const ended = new CordonSdkError('session_ended', `the session has ended: ${e.error_description ?? e.error}`, { error: e.error, error_description: e.error_description, status: e.status, cause: e });
        if (this.#session) this.#session.ended = ended;
        throw ended;
      }
      throw e;
    });
    const a = parseTokenAnswer(body, 'local token endpoint');
    const now = this.#clock.now();
    const sessionEnd = a.sessionExpiresAt ?? null;
    const current = this.#current(a, now, sessionEnd);
    if (!this.#session) this.#session = { sid: a.sid, scope: a.scope ?? [], audience: [], expiresAt: sessionEnd, current, issued: [], ended: null };
    else {
      this.#session.current = current;
      this.#session.expiresAt = sessionEnd;
    }
  }

  #subjectTokenParams(): Array<[string, string]> {
    if (this.mode === 'bootstrap') return [['subject_token', this.#opts.bootstrapToken!], ['subject_token_type', TOKEN_TYPE_BOOTSTRAP]];
    const file = this.#opts.federatedTokenFile!;
    let jwt: string;
    try {
      jwt = readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new CordonSdkError('config', `federated token file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!JWS_SHAPE.test(jwt)) throw new CordonSdkError('config', `federated token file ${file} does not hold a JWT`);
    return [['subject_token', jwt], ['subject_token_type', TOKEN_TYPE_JWT]];
  }

  /** Client authentication as the agent: Basic for a secret, a signed assertion for private_key_jwt, the public workload client otherwise. */
  async #clientAuth(): Promise<{ headers: Record<string, string>; form: Array<[string, string]> }> {
    if (this.#opts.clientSecret !== undefined) {
      const enc = (s: string) => encodeURIComponent(s);
      return { headers: { authorization: `Basic ${Buffer.from(`${enc(this.clientId!)}:${enc(this.#opts.clientSecret)}`).toString('base64')}` }, form: [] };
    }
    if (this.#opts.privateKey !== undefined) {
      this.#clientKey ??= loadClientKey(this.#opts.privateKey, this.#opts.privateKeyAlg, this.#opts.privateKeyKid);
      const { key, alg, kid } = await this.#clientKey;
      const iat = Math.floor(this.#clock.now() / 1000);
      const assertion = await new SignJWT({})
        .setProtectedHeader(kid ? { alg, kid } : { alg })
        .setIssuer(this.clientId!)
        .setSubject(this.clientId!)
        .setAudience(this.issuer)
        .setIssuedAt(iat)
        .setExpirationTime(iat + 60)
        .setJti(randomBytes(16).toString('base64url'))
        .sign(key);
      return { headers: {}, form: [['client_id', this.clientId!], ['client_assertion_type', ASSERTION_TYPE], ['client_assertion', assertion]] };
    }
    return { headers: {}, form: [['client_id', this.clientId ?? WORKLOAD_CLIENT_ID]] };
  }

  /**
   * POST /token. With a DPoP key a proof is sent (unless `dpop: false`). `bound` (default: a proof
   * was sent) says the answer must be bound to our key; for a delegation the proof only shows we
   * hold the subject token, and the new token is the sub-agent's. A token issued but refused here is
   * revoked at once (`endSession` when it opened a session), never left alive.
   */
  async #tokenRequest(form: Array<[string, string]>, what: string, opts: { dpop?: boolean; bound?: boolean; endSession?: boolean } = {}): Promise<TokenAnswer> {
    this.#ensureOpen();
    const url = `${this.issuer}/token`;
    const auth = await this.#clientAuth();
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...auth.headers };
    const key = await this.#dpopKey();
    const proved = key !== null && opts.dpop !== false;
    if (proved) headers.dpop = await key.proof('POST', url, { nowMs: this.#clock.now() });
    const body = new URLSearchParams([...form, ...auth.form]).toString();
    const { body: json } = await requestJson(this.#http, url, { method: 'POST', headers, body }, what);
    const a = parseTokenAnswer(json, what);
    if ((opts.bound ?? proved) && a.tokenType !== 'DPoP') {
      await this.#revokeToken(a.accessToken, opts.endSession ?? false).catch(() => {});
      throw new CordonSdkError('bad_response', `${what}: asked for a DPoP-bound token but got token_type ${a.tokenType}; it was revoked`);
    }
    return a;
  }

  async #revokeToken(token: string, endSession = false): Promise<void> {
    const url = `${this.issuer}/revoke`;
    const auth = await this.#clientAuth();
    const body = new URLSearchParams([['token', token], ['token_type_hint', 'access_token'], ...(endSession ? [['end_session', 'true']] : []), ...auth.form]).toString();
    await requestJson(this.#http, url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth.headers }, body }, 'revocation', { allowEmpty: true });
  }

  /**
   * The token to present at /credentials. The broker takes only tokens whose audience includes
   * it, so a resource server that holds the agent's token cannot trade it for backend
   * credentials. A session opened for resource servers gets a second, broker-audience token.
   */
  async #credentialToken(): Promise<CurrentToken> {
    const t = await this.#fresh();
    const s = this.#session!;
    if (s.audience.length === 0 || s.audience.includes(this.issuer)) return t;
    if (!this.#canRenew() || this.mode === 'local') {
      throw new CordonSdkError('config', `this session's tokens are for ${s.audience.join(', ')}, not the broker: open the session with the broker (${this.issuer}) among its audiences to fetch credentials`);
    }
    const now = this.#clock.now();
    const b = s.brokerToken;
    if (b && now < b.refreshAt && now < b.expiresAt - 1000) return b;
    s.brokerTokenInFlight ??= this.#renewal(s, 'token for /credentials', { audience: [this.issuer] })
      .then((a) => {
        const at = this.#clock.now();
        s.brokerToken = this.#current(a, at, s.expiresAt);
        s.issued.push({ token: a.accessToken, expiresAt: at + a.expiresIn * 1000 });
        return s.brokerToken;
      })
      .catch((e: unknown) => {
        // As for the session token (#fresh, #refresh): a refused renewal means the session is over;
        // a broker hiccup while the cached broker token still has life left keeps that token.
        if (e instanceof CordonSdkError && e.code === 'oauth' && e.error === 'invalid_grant') throw this.#ended(s, e);
        const retryable = brokerHiccup(e);
        if (retryable && b && this.#clock.now() < b.expiresAt - 1000) return b;
        throw e;
      })
      .finally(() => {
        s.brokerTokenInFlight = undefined;
      });
    return s.brokerTokenInFlight;
  }

  /** Marks the session ended because the broker refused to renew it; returns the error to throw. */
  #ended(s: Session, e: CordonSdkError): CordonSdkError {
    s.ended = new CordonSdkError('session_ended', `session ${s.sid} cannot be renewed: ${e.error_description ?? e.error}`, { error: e.error, error_description: e.error_description, status: e.status, cause: e });
    return s.ended;
  }

  async #fetchCredentials(name: string, retried = false): Promise<BackendCredential> {
    const t = await this.#credentialToken();
    const url = `${this.issuer}/credentials/${encodeURIComponent(name)}`;
    const headers: Record<string, string> = { authorization: `${t.tokenType} ${t.accessToken}`, accept: 'application/json' };
    if (t.tokenType === 'DPoP') {
      const key = await this.#dpopKey();
      if (!key) throw new CordonSdkError('config', 'the token is DPoP-bound but this agent has no DPoP key');
      headers.dpop = await key.proof('POST', url, { nowMs: this.#clock.now(), accessToken: t.accessToken });
    }
    let json: unknown;
    try {
      ({ body: json } = await requestJson(this.#http, url, { method: 'POST', headers }, `credentials ${name}`));
    } catch (e) {
      // The token was refused (revoked, or the broker's view differs): ask for a new one once, which also tells whether the session is over.
      if (!retried && e instanceof CordonSdkError && e.code === 'oauth' && e.error === 'invalid_token' && this.#canRenew() && this.#session) {
        this.#session.current.refreshAt = 0;
        this.#session.brokerToken = undefined;
        return this.#fetchCredentials(name, true);
      }
      throw e;
    }
    const c = parseCredential(json, name);
    this.#creds.set(name, { value: c, fetchedAt: this.#clock.now() });
    return c;
  }
}

/** A failure of the broker or the network, not a refusal: worth keeping a still-valid token over. */
const brokerHiccup = (e: unknown): boolean => e instanceof CordonSdkError && (e.code === 'network' || e.code === 'bad_response' || (e.status ?? 0) >= 500);

function parseTokenAnswer(json: unknown, what: string): TokenAnswer {
  if (!isObject(json)) throw new CordonSdkError('bad_response', `${what}: the token response is not a JSON object`);
  const { access_token, token_type, expires_in, scope, sid, session_expires_at } = json;
  if (typeof access_token !== 'string' || !JWS_SHAPE.test(access_token)) throw new CordonSdkError('bad_response', `${what}: the token response has no access_token JWT`);
  const tt = typeof token_type === 'string' ? token_type.toLowerCase() : '';
  if (tt !== 'bearer' && tt !== 'dpop') throw new CordonSdkError('bad_response', `${what}: token_type ${JSON.stringify(token_type)} is neither Bearer nor DPoP`);
  if (typeof expires_in !== 'number' || !Number.isFinite(expires_in) || expires_in <= 0) throw new CordonSdkError('bad_response', `${what}: expires_in is missing or not a positive number`);
  let theSid = sid;
  if (theSid === undefined) {
    try {
      theSid = decodeJwt(access_token).sid;
    } catch {
      /* checked below */
    }
  }
  if (typeof theSid !== 'string' || !theSid) throw new CordonSdkError('bad_response', `${what}: the token response names no session (sid)`);
  if (scope !== undefined && typeof scope !== 'string') throw new CordonSdkError('bad_response', `${what}: scope is not a string`);
  if (session_expires_at !== undefined && (typeof session_expires_at !== 'number' || !Number.isFinite(session_expires_at))) throw new CordonSdkError('bad_response', `${what}: session_expires_at is not a number`);
  return {
    accessToken: access_token,
    tokenType: tt === 'dpop' ? 'DPoP' : 'Bearer',
    expiresIn: expires_in,
    scope: typeof scope === 'string' ? splitScope(scope) : undefined,
    sid: theSid,
    sessionExpiresAt: typeof session_expires_at === 'number' ? session_expires_at * 1000 : undefined,
  };
}

function parseCredential(json: unknown, name: string): BackendCredential {
  const what = `credentials ${name}`;
  if (!isObject(json)) throw new CordonSdkError('bad_response', `${what}: the answer is not a JSON object`);
  const { provider, expires_at, lease_id, credentials } = json;
  if (typeof provider !== 'string' || !provider) throw new CordonSdkError('bad_response', `${what}: no provider in the answer`);
  const exp = typeof expires_at === 'string' ? new Date(expires_at) : null;
  if (!exp || Number.isNaN(exp.getTime())) throw new CordonSdkError('bad_response', `${what}: expires_at is missing or not a date`);
  if (!isObject(credentials)) throw new CordonSdkError('bad_response', `${what}: credentials is not an object`);
  return { name: typeof json.name === 'string' ? json.name : name, provider, expiresAt: exp, ...(typeof lease_id === 'string' ? { leaseId: lease_id } : {}), ...(json.static === true ? { static: true } : {}), credentials };
}

/** An `aws-sts` credential in the shape AWS SDK v3 takes. */
export function toAwsIdentity(c: BackendCredential): AwsCredentialIdentity {
  if (c.provider !== 'aws-sts') throw new CordonSdkError('unsupported', `credential ${c.name} comes from ${c.provider}, not aws-sts`);
  const { AccessKeyId, SecretAccessKey, SessionToken, Expiration } = c.credentials;
  if (typeof AccessKeyId !== 'string' || typeof SecretAccessKey !== 'string' || (SessionToken !== undefined && typeof SessionToken !== 'string')) {
    throw new CordonSdkError('bad_response', `credentials ${c.name}: AccessKeyId, SecretAccessKey or SessionToken missing`);
  }
  let expiration = c.expiresAt;
  if (typeof Expiration === 'string' && !Number.isNaN(Date.parse(Expiration))) expiration = new Date(Math.min(Date.parse(Expiration), c.expiresAt.getTime()));
  return { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey, ...(SessionToken ? { sessionToken: SessionToken } : {}), expiration };
}

/** A private key for private_key_jwt from a JWK, a PKCS#8 PEM or a CryptoKey; symmetric keys are refused. */
async function loadClientKey(k: CryptoKey | JWK | string, alg?: ClientKeyAlg, kid?: string): Promise<{ key: CryptoKey; alg: ClientKeyAlg; kid?: string }> {
  let jwk: JWK;
  if (typeof k === 'string') {
    const text = k.trim();
    if (text.startsWith('{')) {
      try {
        jwk = JSON.parse(text) as JWK;
      } catch {
        throw new CordonSdkError('config', 'private key: the JWK is not valid JSON');
      }
    } else {
      try {
        jwk = createPrivateKey(text).export({ format: 'jwk' }) as JWK;
      } catch {
        throw new CordonSdkError('config', 'private key: neither a JWK nor a PKCS#8/SEC1 PEM private key');
      }
    }
  } else if (isObject(k) && typeof (k as JWK).kty === 'string') {
    jwk = k as JWK;
  } else {
    if (!alg) throw new CordonSdkError('config', 'privateKeyAlg is required with a CryptoKey');
    return { key: k as CryptoKey, alg, kid };
  }
  if (jwk.kty === 'oct') throw new CordonSdkError('config', 'private key: symmetric keys cannot sign client assertions');
  if (!jwk.d) throw new CordonSdkError('config', 'private key: the JWK has no private part (d)');
  const a = (alg ?? jwk.alg ?? inferAlg(jwk)) as ClientKeyAlg | undefined;
  if (!a || !['ES256', 'EdDSA', 'RS256', 'PS256'].includes(a)) throw new CordonSdkError('config', `private key: cannot use algorithm ${JSON.stringify(a)} (ES256, EdDSA, RS256 or PS256)`);
  const key = (await importJWK(jwk, a)) as CryptoKey;
  return { key, alg: a, kid: kid ?? jwk.kid };
}

function inferAlg(jwk: JWK): ClientKeyAlg | undefined {
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  if (jwk.kty === 'RSA') return 'RS256';
  return undefined;
}

export type { DpopAlg };
