/**
 * Who is calling through the gateway, as the broker recorded it: the token's record (never the
 * presented claims), its chain, the scopes it holds, and the policies that bound it. Built by the
 * token check (tokens/live-cache.ts) and read by every later step; never mutated.
 */
export type { LivePrincipal as GatewayPrincipal } from '../tokens/live-cache.ts';
