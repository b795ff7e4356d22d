/**
 * `cordon/middleware`: what a resource server needs to accept Cordon tokens. The parts live in
 * their own modules: jwks.ts (the broker's keys, on jose's remote JWK set), revocation-feed.ts,
 * token-verifier.ts (framework-free verification) and express.ts (the express adapter).
 */
export { AgentTokenError, type AgentIdentity, type AgentTokenErrorCode } from './agent-token-error.ts';
export { JwksCache, type JwksCacheOptions } from './jwks.ts';
export { RevocationSet } from './revocation-feed.ts';
export { createAgentTokenVerifier, type AgentTokenVerifier, type AgentTokenVerifierOptions, type VerifyInput } from './token-verifier.ts';
export { requireAgentToken, type AgentTokenMiddleware, type RequireAgentTokenOptions } from './express.ts';
