import Provider, { errors as oidcErrors, type KoaContextWithOIDC, type Adapter, type AdapterPayload } from 'oidc-provider';
import type { Broker } from '../broker.ts';
import { CordonError, type OAuthErrorCode } from '../errors.ts';
import { replayGuard } from '../store/replay.ts';
import { secretMatches } from '../keys/keyring.ts';
import { isWellFormedId } from '../ids.ts';
import { CLIENT_ASSERTION_ALGS, DPOP_ALGS, GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, WORKLOAD_CLIENT_ID } from '../protocol/constants.ts';
import { recordRefusal } from '../audit/refusals.ts';
import { Attempt } from '../audit/attempt.ts';
import { assertionPayload, assertionReplayKey, checkAssertionTimes } from '../agents/client-assertion.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { claimedClientId } from './basic-auth.ts';
import { providerBody, providerClient, providerParams, providerRequestState, replaceClientSecretCheck } from './internals.ts';
import * as clientCredentials from './grants/client-credentials.ts';
import * as tokenExchange from './grants/token-exchange.ts';

export const GRANT_TYPES = [GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE];
export const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'] as const;

/**
 * oidc-provider's storage adapter. Clients come from the agents table (the secret field holds
 * only the keyed hash, compared by replaceClientSecretCheck below); client-assertion
 * replay detection goes to the shared replay_guard table so every replica sees it. The provider
 * keeps nothing else: Cordon's tokens and sessions live in Cordon's own tables.
 */
function adapterFor(b: Broker) {
  return class CordonAdapter implements Adapter {
    readonly model: string;
    constructor(model: string) {
      this.model = model;
    }
    async find(id: string): Promise<AdapterPayload | undefined> {
      if (this.model === 'Client') {
        // The public workload client: no secret, token exchange only; the subject token names the agent (grants/token-exchange.ts).
        if (id === WORKLOAD_CLIENT_ID) {
          return {
            client_id: WORKLOAD_CLIENT_ID,
            token_endpoint_auth_method: 'none',
            grant_types: [GRANT_TOKEN_EXCHANGE],
            response_types: [],
            redirect_uris: [],
          };
        }
        if (!isWellFormedId(id)) return undefined;
        const a = await b.live.agents.get(b.read, id);
        if (!a || a.status === 'revoked') return undefined;
        // Kept for this request only, so the grant does not read the same row again.
        const state = providerRequestState();
        if (state) state.cordonAgent = a;
        return {
          client_id: a.id,
          ...(a.authMethod === 'private_key_jwt' ? { jwks: a.jwks as never } : { client_secret: a.secretHash ?? undefined }),
          token_endpoint_auth_method: a.authMethod,
          grant_types: GRANT_TYPES,
          response_types: [],
          redirect_uris: [],
        };
      }
      if (this.model === 'ReplayDetection') {
        // oidc-provider asks find() then saves: two steps that concurrent replays slip between. The
        // claim is made here, atomically; a value seen before is a replay (upsert only fixes the expiry).
        const fresh = await replayGuard.claim(b.db, assertionReplayKey(id), b.clock.now() + PROVISIONAL_REPLAY_MS, b.clock.now());
        return fresh ? undefined : { jti: id };
      }
      return undefined;
    }
    async upsert(id: string, _payload: AdapterPayload, expiresIn: number): Promise<void> {
      if (this.model === 'ReplayDetection') await replayGuard.extend(b.db, assertionReplayKey(id), b.clock.now() + expiresIn * 1000);
    }
    async findByUserCode(): Promise<undefined> {
      return undefined;
    }
    async findByUid(): Promise<undefined> {
      return undefined;
    }
    async consume(): Promise<void> {}
    async destroy(): Promise<void> {}
    async revokeByGrantId(): Promise<void> {}
  };
}

/** Metadata oidc-provider publishes for flows Cordon does not serve. */
const UNSERVED_METADATA = [
  'authorization_endpoint',
  'end_session_endpoint',
  'pushed_authorization_request_endpoint',
  'require_pushed_authorization_requests',
  'response_modes_supported',
  'code_challenge_methods_supported',
  'claims_parameter_supported',
  'claims_supported',
  'claim_types_supported',
  'request_parameter_supported',
  'request_uri_parameter_supported',
  'require_request_uri_registration',
  'request_object_signing_alg_values_supported',
  'id_token_signing_alg_values_supported',
  'subject_types_supported',
  'authorization_response_iss_parameter_supported',
  'scopes_supported',
  'acr_values_supported',
];

/** Long enough for any client assertion (they live minutes); upsert then sets the real expiry. */
const PROVISIONAL_REPLAY_MS = 15 * 60_000;

/** Typed broker errors thrown in a grant become oidc-provider errors, which it renders as RFC 6749 JSON. */
export function toProviderError(e: CordonError): Error {
  const err = new oidcErrors.CustomOIDCProviderError(e.code, e.description) as Error & { status: number; statusCode: number; expose: boolean };
  err.status = e.status;
  err.statusCode = e.status;
  err.expose = true; // our descriptions are written for the caller, including 5xx backend errors
  return err;
}

export type GrantHandler = (b: Broker, ctx: KoaContextWithOIDC, attempt: Attempt) => Promise<void>;

export async function createProvider(b: Broker): Promise<Provider> {
  await b.keys.fresh();
  const { alg } = b.keys.active();
  const { exportJWK } = await import('jose');
  // oidc-provider signs nothing we use, but refuses to start without a key; give it the active one.
  const jwk = { ...(await exportJWK(b.keys.active().privateKey)), kid: b.keys.active().kid, alg, use: 'sig' };
  const provider = new Provider(b.config.issuer, {
    adapter: adapterFor(b),
    jwks: { keys: [jwk] },
    clientAuthMethods: [...CLIENT_AUTH_METHODS, 'none'], // 'none' only for the public cordon-workload client
    clientDefaults: { grant_types: GRANT_TYPES, response_types: [], id_token_signed_response_alg: alg, token_endpoint_auth_method: 'client_secret_basic' },
    enabledJWA: { clientAuthSigningAlgValues: [...CLIENT_ASSERTION_ALGS], idTokenSigningAlgValues: [alg] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      userinfo: { enabled: false },
      dPoP: { enabled: false }, // DPoP is checked by Cordon itself (tokens/dpop.ts), at /token and at /credentials alike
    },
    discovery: {
      introspection_endpoint: `${b.config.issuer}/introspect`,
      revocation_endpoint: `${b.config.issuer}/revoke`,
      introspection_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS],
      revocation_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS],
      dpop_signing_alg_values_supported: DPOP_ALGS,
      revocation_feed_endpoint: `${b.config.issuer}/revocations`,
      credentials_endpoint: `${b.config.issuer}/credentials`,
    },
    routes: { jwks: '/jwks', token: '/token' },
    scopes: [],
    claims: {},
    responseTypes: ['none'],
    pkce: { required: () => false },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  // Secrets are stored as a keyed hash, so compare the hash of what was presented.
  replaceClientSecretCheck(provider, (presented, stored) => secretMatches(b.secretHashKey, presented, stored));
  for (const g of [clientCredentials, tokenExchange]) {
    provider.registerGrantType(g.grantType, (ctx: KoaContextWithOIDC) => runGrant(b, g.handler, ctx), g.parameters, g.allowDuplicates);
  }
  // Refusals oidc-provider makes itself (client authentication, malformed requests) are audited
  // too. Its event is not awaited, so the listener only notes the error and the middleware below
  // writes the row before the answer leaves, as every other refusal's row is.
  provider.on('grant.error', (ctx: KoaContextWithOIDC, err: Error & { error?: string; error_description?: string }) => {
    if (!ctx.state || ctx.state.cordonRefusalRecorded) return;
    ctx.state.cordonRefusal = err;
  });
  provider.use(async (ctx, next) => {
    await next();
    const err = ctx.state?.cordonRefusal as (Error & { error?: string; error_description?: string; status?: number }) | undefined;
    if (!err || ctx.state.cordonRefusalRecorded) return;
    const params = providerParams(ctx);
    const clientId = providerClient(ctx)?.clientId ?? claimedClientId(ctx.headers?.authorization, params.client_id);
    const attempt = new Attempt('token', clientAddressOf(ctx.req?.socket?.remoteAddress))
      .by(clientId)
      .note({ grant_type: String(params.grant_type ?? '').slice(0, 100) });
    const code = (err.error ?? 'invalid_request') as OAuthErrorCode;
    const refusal = new CordonError(code, (err.error_description ?? err.message).slice(0, 300), {
      reason: code,
      ...(err.status ? { status: err.status } : {}),
    });
    await recordRefusal(b, attempt, refusal).catch((e: Error) => b.log.error({ err: e.message }, 'could not audit a refusal'));
  });
  provider.on('server_error', (_ctx: unknown, err: Error) => b.log.error({ err: err.message }, 'token endpoint error'));
  // Discovery describes what this broker serves: no authorization endpoint, no ID tokens, no
  // browser flows; endpoint URLs come from the issuer, not from the request's Host header.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route !== 'discovery' || typeof ctx.body !== 'object' || ctx.body === null) return;
    const doc = ctx.body as Record<string, unknown>;
    for (const k of UNSERVED_METADATA) delete doc[k];
    doc.token_endpoint = `${b.config.issuer}/token`;
    doc.jwks_uri = `${b.config.issuer}/jwks`;
  });
  return provider;
}

/**
 * oidc-provider decodes the form leniently: raw bytes that are not UTF-8 and `%FF`-style escapes
 * both become U+FFFD. Cordon's own endpoints refuse such bodies (form.ts); the token endpoint must
 * too, so no scope, task or id reaches a decision as replacement characters.
 */
function refuseReplacementChars(ctx: KoaContextWithOIDC): void {
  for (const [k, v] of Object.entries(providerBody(ctx))) {
    for (const s of [k, ...(Array.isArray(v) ? v : [v])]) {
      if (typeof s === 'string' && s.includes('\uFFFD'))
        throw new CordonError('invalid_request', 'request body is not valid UTF-8', { reason: 'body_not_utf8' });
    }
  }
}

/** oidc-provider verified the assertion's signature and claims on its wall clock; the broker's clock decides too. */
function assertionTimesOnBrokerClock(b: Broker, ctx: KoaContextWithOIDC): void {
  const assertion = providerParams(ctx).client_assertion;
  if (typeof assertion !== 'string' || providerClient(ctx)?.clientAuthMethod !== 'private_key_jwt') return;
  const payload = assertionPayload(assertion);
  if (!payload) throw new CordonError('invalid_client', 'client_assertion is malformed', { reason: 'client_auth_failed' });
  checkAssertionTimes(b, payload);
}

async function runGrant(b: Broker, handler: GrantHandler, ctx: KoaContextWithOIDC): Promise<void> {
  // The grant is this request's entry point: it writes the refusal's one row, from what the handler learned.
  const attempt = new Attempt('token', clientAddressOf(ctx.req?.socket?.remoteAddress))
    .by(providerClient(ctx)?.clientId ?? null)
    .note({ grant_type: String(providerParams(ctx).grant_type ?? '').slice(0, 100) });
  try {
    refuseReplacementChars(ctx);
    assertionTimesOnBrokerClock(b, ctx);
    await handler(b, ctx, attempt);
    ctx.set('Cache-Control', 'no-store');
  } catch (e) {
    if (e instanceof CordonError) {
      if (e.code !== 'server_error') {
        if (ctx.state) ctx.state.cordonRefusalRecorded = true; // oidc-provider's own refusal path must not write it again
        await recordRefusal(b, attempt, e);
      }
      throw toProviderError(e);
    }
    b.log.error({ err: (e as Error).message }, 'grant failed');
    throw toProviderError(new CordonError('server_error', 'the broker could not complete the request'));
  }
}
