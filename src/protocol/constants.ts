/**
 * The wire protocol between the broker, the agent SDK and resource servers: names both sides
 * must spell the same. The broker (src/tokens, src/http) and the SDK (src/sdk) import them from
 * here and nowhere else.
 */

/** RFC 9068 §2.1: the `typ` of a Cordon access token. */
export const ACCESS_TOKEN_TYP = 'at+jwt';
/** RFC 8693 §3 token type identifiers. */
export const TOKEN_TYPE_ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
/** A one-time bootstrap token (`cordon agent bootstrap`), redeemed by token exchange. */
export const TOKEN_TYPE_BOOTSTRAP = 'urn:cordon:token-type:bootstrap';
export const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const GRANT_CLIENT_CREDENTIALS = 'client_credentials';
/** RFC 7523 §2.2: a private_key_jwt client assertion. */
export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** Algorithms a private_key_jwt client assertion may be signed with. */
export const CLIENT_ASSERTION_ALGS = ['ES256', 'EdDSA', 'RS256', 'PS256'] as const;

/**
 * The public OAuth client a workload uses at /token before it has any secret: it may only
 * redeem a bootstrap token or a federated JWT, and the agent it becomes is named by that
 * subject token, never by the client.
 */
export const WORKLOAD_CLIENT_ID = 'cordon-workload';

/** RFC 9449 §4.2: the `typ` of a DPoP proof. */
export const DPOP_TYP = 'dpop+jwt';
/** RFC 9449: asymmetric algorithms only. */
export const DPOP_ALGS = ['ES256', 'EdDSA', 'RS256', 'PS256'];
