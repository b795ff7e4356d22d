import type { CryptoKey, JWK } from 'jose';
import type { CLIENT_ASSERTION_ALGS } from '../protocol/constants.ts';
import type { DpopKey } from './dpop.ts';
import type { FetchLike } from './http.ts';

/** How an agent gets its tokens: a client credential, a one-time bootstrap token, a federated JWT, a handed-over token, or `cordon exec`'s local endpoint. */
export type AgentMode = 'secret' | 'private_key_jwt' | 'bootstrap' | 'federated' | 'handed' | 'local';

/** Milliseconds since the epoch; inject one in tests (the broker's ManualClock fits). */
export interface SdkClock {
  now(): number;
}

export type ClientKeyAlg = (typeof CLIENT_ASSERTION_ALGS)[number];

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
  /** The gateway's public URL (CORDON_GATEWAY_URL): where `mcpTransport()` reaches MCP upstreams. */
  gatewayUrl?: string;
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
