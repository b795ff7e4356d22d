/**
 * For an MCP client that does its own OAuth (`authProvider` of the official SDK's transport) rather
 * than `CordonAgent.mcpTransport()`: the SDK's `ClientCredentialsProvider`, pointed at Cordon.
 *
 * Three things differ from the SDK's defaults, each for a reason:
 * - Authorization-server metadata: the SDK's discovery requires `authorization_endpoint`, which
 *   Cordon does not publish (it serves no browser flow). The SDK lets a provider hand it discovery
 *   state it already holds (`discoveryState()`), so this provider reads Cordon's discovery document
 *   itself and checks its `issuer`; the protected-resource metadata is still the SDK's to find.
 * - Scope: the SDK would ask for every scope the resource lists (`scopes_supported`); an agent asks
 *   for its task's scope, which its policy must hold.
 * - Renewal: the first token opens a session; later ones renew in it (`session=<sid>`), and once
 *   that session has ended (revoked, or past its session_ttl) a request fails instead of quietly
 *   opening another, so a revocation stops the client.
 */
import type { AuthorizationServerMetadata, OAuthClientProvider, OAuthDiscoveryState, StoredOAuthTokens } from '@modelcontextprotocol/client';
import { CordonSdkError } from './errors.ts';
import type { FetchLike } from './http.ts';
import { loadMcpClient } from './mcp.ts';

export interface CordonClientCredentialsOptions {
  /** The broker's issuer URL. */
  issuer: string;
  clientId: string;
  /** client_secret_basic. */
  clientSecret: string;
  /** The task's scope, e.g. `gw:github/list_issues`. */
  scope: string;
  task?: string;
  fetch?: FetchLike;
}

/** The session a Cordon access token (a JWT) belongs to; read only to renew in it, the broker decides. */
function sidOf(accessToken: string): string | undefined {
  try {
    const claims = JSON.parse(Buffer.from(accessToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sid?: unknown };
    return typeof claims.sid === 'string' ? claims.sid : undefined;
  } catch {
    return undefined;
  }
}

async function cordonMetadata(issuer: string, fetchFn: FetchLike): Promise<AuthorizationServerMetadata> {
  const url = `${issuer}/.well-known/openid-configuration`;
  let doc: Record<string, unknown>;
  try {
    const r = await fetchFn(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    doc = (await r.json()) as Record<string, unknown>;
  } catch (e) {
    throw new CordonSdkError('network', `cannot read the broker's metadata at ${url}: ${(e as Error).message}`, { cause: e });
  }
  // RFC 8414 §3.3: the document must name the issuer it was asked of.
  if (doc.issuer !== issuer || typeof doc.token_endpoint !== 'string')
    throw new CordonSdkError('bad_response', `the metadata at ${url} is not the issuer ${issuer}'s (issuer ${JSON.stringify(doc.issuer)})`);
  return doc as unknown as AuthorizationServerMetadata;
}

/** An `OAuthClientProvider` for the SDK's transports (`authProvider`) that gets its tokens from Cordon. */
export async function cordonClientCredentialsProvider(opts: CordonClientCredentialsOptions): Promise<OAuthClientProvider> {
  const { ClientCredentialsProvider } = await loadMcpClient();
  const issuer = opts.issuer.replace(/\/+$/, '');
  const fetchFn: FetchLike = opts.fetch ?? ((input, init) => fetch(input, init));
  let metadata: Promise<AuthorizationServerMetadata> | undefined;
  let saved: Partial<OAuthDiscoveryState> = {};
  let sid: string | undefined;

  class CordonClientCredentials extends ClientCredentialsProvider {
    async discoveryState(): Promise<OAuthDiscoveryState> {
      metadata ??= cordonMetadata(issuer, fetchFn).catch((e: unknown) => {
        metadata = undefined; // the next attempt reads it again
        throw e;
      });
      return { ...saved, authorizationServerUrl: issuer, authorizationServerMetadata: await metadata };
    }
    saveDiscoveryState(state: OAuthDiscoveryState): void {
      saved = { resourceMetadata: state.resourceMetadata, resourceMetadataUrl: state.resourceMetadataUrl };
    }
    #tokens: StoredOAuthTokens | undefined;
    override tokens(): StoredOAuthTokens | undefined {
      return this.#tokens;
    }
    override saveTokens(tokens: StoredOAuthTokens): void {
      this.#tokens = tokens;
      sid = sidOf(tokens.access_token) ?? sid;
    }
    /** The SDK drops what a refusal made useless; the session is kept, so an ended one stays ended. */
    invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery'): void {
      if (scope === 'all' || scope === 'tokens') this.#tokens = undefined;
      if (scope === 'all' || scope === 'discovery') {
        saved = {};
        metadata = undefined;
      }
    }
    override prepareTokenRequest(): URLSearchParams {
      const params = super.prepareTokenRequest(opts.scope);
      if (sid !== undefined) params.set('session', sid);
      else if (opts.task !== undefined) params.set('task', opts.task);
      return params;
    }
  }
  return new CordonClientCredentials({ clientId: opts.clientId, clientSecret: opts.clientSecret, scope: opts.scope, expectedIssuer: issuer });
}
