import { readFileSync } from 'node:fs';
import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS } from '../protocol/constants.ts';
import { BrokerClient } from './broker-client.ts';
import { clientAuthFor } from './client-auth.ts';
import { CredentialCache, parseCredential, toAwsIdentity } from './credential-cache.ts';
import { DpopKey, type DpopAlg } from './dpop.ts';
import { CordonSdkError } from './errors.ts';
import { requestJson } from './http.ts';
import { tokenSourceFor, type TokenSource } from './sources/index.ts';
import { list, refusedWith, splitScope, type Form } from './token-answer.ts';
import { mcpEndpoint, mcpTransportFor, type McpTransportOptions } from './mcp.ts';
import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { TokenKeeper } from './token-keeper.ts';
import type {
  AgentMode,
  AwsCredentialProvider,
  BackendCredential,
  CordonAgentOptions,
  DelegateRequest,
  DelegatedToken,
  SdkClock,
  SessionInfo,
  StartSessionRequest,
} from './types.ts';

// The public surface as it was when all of it lived here.
export { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_BOOTSTRAP, TOKEN_TYPE_JWT, WORKLOAD_CLIENT_ID } from '../protocol/constants.ts';
export { toAwsIdentity } from './credential-cache.ts';
export type * from './types.ts';
export type { DpopAlg };

const CRED_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** revoke() ends the session with a token that has at least this long to live (the request takes a moment, clocks differ). */
const REVOKE_MARGIN_MS = 5000;

/**
 * An agent's client for the Cordon broker. It opens one session, keeps a fresh token for it
 * (asking again with `session=<sid>` before expiry, never past the session's end), delegates,
 * fetches backend credentials and revokes what it holds when done.
 *
 * A thin facade: the way of starting is a token source (sources/), renewal is the token
 * keeper's, credentials are cached by the credential cache, /token and /revoke are the broker client's.
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
  /** The gateway's public URL, base of `mcpTransport()`. */
  readonly gatewayUrl?: string;
  readonly #clock: SdkClock;
  readonly #broker: BrokerClient;
  readonly #source: TokenSource;
  readonly #keeper: TokenKeeper;
  readonly #creds: CredentialCache;
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
    this.clientId = opts.clientId;
    if (opts.gatewayUrl) this.gatewayUrl = opts.gatewayUrl.replace(/\/+$/, '');
    this.#clock = opts.clock ?? { now: () => Date.now() };
    const dpop = opts.dpop instanceof DpopKey ? opts.dpop : opts.dpop === true ? DpopKey.generate() : null;
    this.#broker = new BrokerClient({
      issuer: this.issuer,
      http: { fetch: opts.fetch ?? ((input, init) => fetch(input, init)), timeoutMs: opts.timeoutMs ?? 10_000 },
      clock: this.#clock,
      auth: clientAuthFor(opts, this.issuer, this.#clock),
      dpop,
      ensureOpen: () => this.#ensureOpen(),
    });
    this.#source = tokenSourceFor(opts, this.#broker);
    this.#keeper = new TokenKeeper(this.#source, this.#clock, opts.random ?? Math.random);
    this.#creds = new CredentialCache(opts.credentialMarginSec ?? 60);
  }

  /** How this agent gets its tokens. */
  get mode(): AgentMode {
    return this.#source.mode;
  }

  /**
   * From the environment: CORDON_ISSUER, CORDON_CLIENT_ID with CORDON_CLIENT_SECRET or
   * CORDON_PRIVATE_KEY_FILE, or CORDON_BOOTSTRAP_TOKEN, or CORDON_FEDERATED_TOKEN_FILE; under
   * `cordon exec`, CORDON_TOKEN_URI/CORDON_TOKEN_AUTHORIZATION; a handed-over CORDON_TOKEN.
   * CORDON_DPOP=1 binds tokens to an ephemeral DPoP key; CORDON_GATEWAY_URL is the gateway's. `overrides` win over the environment.
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
    if (e('CORDON_GATEWAY_URL')) opts.gatewayUrl = e('CORDON_GATEWAY_URL');
    return new CordonAgent({ ...opts, ...overrides });
  }

  /** The DPoP key's thumbprint, when the agent has one (give it to an orchestrator as `dpopJkt`). */
  async dpopJkt(): Promise<string | undefined> {
    return (await this.#broker.dpopKey())?.jkt;
  }

  /** The open session, if any. */
  get session(): SessionInfo | null {
    const s = this.#keeper.session;
    if (!s) return null;
    return { sid: s.sid, scope: [...s.scope], task: s.task, expiresAt: s.expiresAt, tokenType: s.current.tokenType };
  }

  /** Opens a session for a task (client_credentials, or a bootstrap/federated token exchange). */
  async startSession(req: StartSessionRequest): Promise<SessionInfo> {
    this.#ensureOpen();
    const open = this.#keeper.session;
    if (open && !open.ended) throw new CordonSdkError('config', `a session (${open.sid}) is already open: revoke() or close() it first`);
    if (!this.#source.open) throw new CordonSdkError('unsupported', this.#source.cannotOpen ?? `a ${this.mode} agent cannot open sessions`);
    const scope = splitScope(req.scope);
    if (!scope.length) throw new CordonSdkError('config', 'scope is required: a session is opened for named scopes only');
    const audience = list(req.audience);
    const form: Form = [['scope', scope.join(' ')]];
    if (req.task !== undefined) form.push(['task', req.task]);
    for (const a of audience) form.push(['audience', a]);
    if (req.expiresIn !== undefined) form.push(['expires_in', String(req.expiresIn)]);
    const answer = await this.#source.open(form);
    this.#keeper.begin(answer, { scope, task: req.task, audience, expiresIn: req.expiresIn });
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
    return { accessToken: t.accessToken, tokenType: t.tokenType, expiresAt: t.expiresAt, sid: this.#keeper.session!.sid };
  }

  /** `Authorization` (and `DPoP`) headers for a request to a resource server. */
  async authorizationHeaders(method: string, url: string): Promise<Record<string, string>> {
    return this.#broker.presenting(await this.#fresh(), method, url);
  }

  /** `fetch` with the agent's current token (and a DPoP proof when bound). */
  async fetch(url: string, init: RequestInit = {}): Promise<Response> {
    const method = (init.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries(await this.authorizationHeaders(method, url))) headers.set(k, v);
    return this.#broker.http.fetch(url, { ...init, method, headers });
  }

  /**
   * An MCP client transport of the official SDK (Streamable HTTP) for `{gatewayUrl}/mcp/{upstream}`
   * that presents this agent's current token on every request, so it lives as long as the session:
   * `await new Client({ name: 'me', version: '1' }).connect(await agent.mcpTransport('github'))`.
   * Needs `@modelcontextprotocol/client` 2.x, loaded only here.
   */
  async mcpTransport(upstream: string, opts: McpTransportOptions = {}): Promise<StreamableHTTPClientTransport> {
    this.#ensureOpen();
    const endpoint = mcpEndpoint(upstream, opts, this.gatewayUrl);
    const presenter = {
      authorizationHeaders: (method: string, url: string) => this.authorizationHeaders(method, url),
      ...(this.#source.renew
        ? {
            invalidate: (refused: string) => {
              if (this.#keeper.session?.current.accessToken === refused) this.#keeper.invalidate();
            },
          }
        : {}),
    };
    return mcpTransportFor(presenter, this.#broker.http.fetch, endpoint, opts);
  }

  /** RFC 8693 delegation: an attenuated token for a sub-agent, in this session. */
  async delegate(req: DelegateRequest): Promise<DelegatedToken> {
    const t = await this.#fresh();
    const scope = splitScope(req.scope);
    if (!scope.length) throw new CordonSdkError('config', 'scope is required for a delegation');
    if (!req.to) throw new CordonSdkError('config', 'to (the sub-agent client_id) is required');
    const form: Form = [
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
    const a = await this.#broker.tokenRequest(form, 'delegation', { dpop: t.tokenType === 'DPoP', bound: req.dpopJkt !== undefined });
    return {
      accessToken: a.accessToken,
      tokenType: a.tokenType,
      expiresIn: a.expiresIn,
      expiresAt: this.#clock.now() + a.expiresIn * 1000,
      scope: a.scope ?? scope,
      sid: a.sid,
    };
  }

  /** Backend credentials (`POST /credentials/:name`), cached until shortly before they expire. */
  async credentials(name: string): Promise<BackendCredential> {
    this.#ensureOpen();
    if (!CRED_NAME.test(name)) throw new CordonSdkError('config', `credential name ${JSON.stringify(name.slice(0, 80))} is malformed`);
    // Once the session is known to have ended, nothing cached from it is handed out.
    const ended = this.#keeper.session?.ended;
    if (ended) throw ended;
    return this.#creds.get(name, this.#clock.now(), () => this.#fetchCredentials(name));
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
   * Revokes what this agent holds in the session and refuses further use of it.
   *
   * With a client credential (secret or private_key_jwt) the whole session is ended
   * (`end_session=true`), even when every token it holds has expired: the broker ignores an
   * expired token at /revoke, so the agent first asks for a short-lived token of the session
   * (`session=<sid>`) and ends the session with that one. A refused renewal (`invalid_grant`)
   * means the session has already ended. A bootstrap or federated agent cannot renew, so once
   * its last token has expired it cannot end the session: what is left in it (STS credentials)
   * lives until the session's end, when the broker's sweeper revokes it. Call `close()` before
   * the token expires. An agent on a handed-over token or on `cordon exec` leaves ending the
   * session to whoever holds its credential.
   */
  async revoke(): Promise<void> {
    const s = this.#keeper.session;
    if (!s) return;
    if (!s.ended) s.ended = new CordonSdkError('session_ended', `session ${s.sid} was revoked by this agent`);
    this.#creds.clear();
    if (!this.#source.endsSessions) {
      s.issued = [];
      return;
    }
    const now = this.#clock.now();
    const live = s.issued.filter((t) => t.expiresAt > now);
    // Ending the whole session (not just our tokens) means nobody can renew it with `session=<sid>` later.
    const usable = live
      .filter((t) => t.expiresAt > now + REVOKE_MARGIN_MS)
      .sort((x, y) => x.expiresAt - y.expiresAt)
      .at(-1);
    let token = usable?.token;
    if (!token && this.#source.renewFor) {
      if (s.expiresAt !== null && now >= s.expiresAt) {
        s.issued = []; // the session is over at the broker too
        return;
      }
      try {
        const a = await this.#source.renewFor(s, 'revocation: token for ending the session', { expiresIn: 60 });
        token = a.accessToken;
        s.issued.push({ token, expiresAt: now + a.expiresIn * 1000 });
      } catch (e) {
        if (e instanceof CordonSdkError && e.code === 'session_ended') {
          s.issued = []; // the broker will not renew it: the session has already ended (revoked or expired)
          return;
        }
        throw e;
      }
    }
    // Bootstrap/federated with only nearly expired tokens: try the freshest one anyway.
    token ??= live.sort((x, y) => x.expiresAt - y.expiresAt).at(-1)?.token;
    if (token) await this.#broker.revokeToken(token, true);
    s.issued = [];
  }

  /** Revokes the session (when one is open) and refuses any further call. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      if (this.#keeper.session) await this.revoke();
    } finally {
      this.#closed = true;
    }
  }

  #ensureOpen(): void {
    if (this.#closed) throw new CordonSdkError('closed', 'this CordonAgent has been closed');
  }

  #fresh() {
    this.#ensureOpen();
    return this.#keeper.fresh();
  }

  async #fetchCredentials(name: string, retried = false): Promise<BackendCredential> {
    const t = await this.#keeper.brokerToken(this.issuer);
    const url = `${this.issuer}/credentials/${encodeURIComponent(name)}`;
    const headers = { ...(await this.#broker.presenting(t, 'POST', url)), accept: 'application/json' };
    let json: unknown;
    try {
      ({ body: json } = await requestJson(this.#broker.http, url, { method: 'POST', headers }, `credentials ${name}`));
    } catch (e) {
      // The token was refused (revoked, or the broker's view differs): ask for a new one once, which also tells whether the session is over.
      if (!retried && refusedWith(e, 'invalid_token') && this.#source.renew && this.#keeper.session) {
        this.#keeper.invalidate();
        return this.#fetchCredentials(name, true);
      }
      throw e;
    }
    const c = parseCredential(json, name);
    this.#creds.put(name, c, this.#clock.now());
    return c;
  }
}
