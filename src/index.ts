/**
 * Cordon's package entry: the agent SDK, the resource-server middleware and the types they
 * share. The broker itself runs through the `cordon` CLI (`cordon serve`).
 */
export { CordonAgent } from './sdk/agent.ts';
export { toAwsIdentity } from './sdk/credential-cache.ts';
export { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_BOOTSTRAP, TOKEN_TYPE_JWT, WORKLOAD_CLIENT_ID } from './protocol/constants.ts';
export type {
  AgentMode,
  AwsCredentialIdentity,
  AwsCredentialProvider,
  BackendCredential,
  ClientKeyAlg,
  CordonAgentOptions,
  DelegateRequest,
  DelegatedToken,
  SdkClock,
  SessionInfo,
  StartSessionRequest,
} from './sdk/types.ts';
export { CordonSdkError, isCordonSdkError, type CordonSdkErrorCode } from './sdk/errors.ts';
export { DpopKey, athOf, htuOf, type DpopAlg } from './sdk/dpop.ts';
export type { FetchLike } from './sdk/http.ts';
export type { McpTransportOptions } from './sdk/mcp.ts';
export { cordonClientCredentialsProvider, type CordonClientCredentialsOptions } from './sdk/mcp-oauth.ts';
export {
  requireAgentToken,
  AgentTokenError,
  JwksCache,
  RevocationSet,
  type AgentIdentity,
  type AgentTokenErrorCode,
  type AgentTokenMiddleware,
  type RequireAgentTokenOptions,
} from './sdk/middleware.ts';
export type { AccessTokenClaims, ActClaim } from './tokens/claims.ts';
export { chainOf } from './tokens/claims.ts';
