import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Express, Response } from 'express';
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';

/**
 * Every place Cordon relies on a library's internals (anything not in its documented API) is here,
 * as one small function naming the library, the version it was checked against and what it relies
 * on. test/http.internals.test.ts holds a contract test per function against the installed
 * libraries: run it after upgrading express or oidc-provider (package.json pins their minor
 * versions for that reason) or Node.
 */

/**
 * node:http (checked against Node 20.20): a response whose head is written implicitly (res.end, res.write,
 * express's res.send/json) goes through `this.writeHead` (ServerResponse#_implicitHeader), so a
 * wrapper on the instance sees every response just before its head is written and may still set
 * headers.
 */
export function beforeHeadWritten(res: Response, hook: () => void): void {
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called below with `this` bound
  const writeHead = res.writeHead;
  res.writeHead = function patched(this: Response, ...args: unknown[]) {
    hook();
    return (writeHead as (...a: unknown[]) => Response).apply(this, args);
  } as typeof res.writeHead;
}

/**
 * express 5.3 (checked against 5.3.0): `app.router.stack` holds the app's layers; a route's layer
 * has `route.methods` (lower-case method → true, `_all` for app.all) and `match(path)`. Used to
 * answer 405 with Allow on a path the broker serves. The methods served at `path`, upper-case,
 * HEAD with GET as express does, sorted.
 */
export function methodsRoutedAt(app: Express, path: string): string[] {
  const stack = (app as unknown as { router: { stack: Array<{ route?: { methods: Record<string, boolean> }; match(p: string): boolean }> } }).router.stack;
  const methods = new Set<string>();
  for (const layer of stack) {
    if (!layer.route || !layer.match(path)) continue;
    for (const [m, on] of Object.entries(layer.route.methods)) if (on && m !== '_all') methods.add(m.toUpperCase());
  }
  if (methods.has('GET')) methods.add('HEAD');
  return [...methods].sort();
}

/**
 * node:http (checked against Node 20.20): a server socket's `_httpMessage` is the response being written on
 * it, whose `headersSent` turns true once its head has gone out. Node's own clientError handler
 * checks the same thing before answering. Has a response on this connection begun?
 */
export function responseStarted(socket: Duplex): boolean {
  return (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
}

/**
 * oidc-provider 9.13 (checked against 9.13.3): client_secret_basic and client_secret_post secrets are checked by calling
 * `ctx.oidc.client.compareClientSecret(presented)` (lib/shared/client_auth.js), a method of
 * `provider.Client.prototype` whose `this.clientSecret` is the stored `client_secret`. Cordon
 * stores a keyed hash there, so the comparison is replaced by `matches(presented, stored)`.
 */
export function replaceClientSecretCheck(provider: Provider, matches: (presented: string, stored: string | null) => boolean): void {
  provider.Client.prototype.compareClientSecret = function compare(this: { clientSecret?: string }, presented: string) {
    return Promise.resolve(matches(presented, this.clientSecret ?? null));
  };
}

/**
 * oidc-provider 9.13 (checked against 9.13.3): a client assertion's ReplayDetection id — what its adapter is asked to find
 * and upsert — is base64url(SHA-256(iss ‖ jti)) (lib/models/replay_detection.js `unique`).
 * /introspect and /revoke compute the same id, so one assertion is good for one request anywhere.
 */
export const assertionReplayId = (iss: string, jti: string): string => createHash('sha256').update(`${iss}${jti}`).digest('base64url');

/**
 * oidc-provider 9.13 (checked against 9.13.3): `Provider.ctx` is the Koa context of the request being handled (an
 * AsyncLocalStorage store), also inside adapter calls; `ctx.state` survives to the grant handler.
 * The request's state, or undefined outside a request.
 */
export function providerRequestState(): Record<string, unknown> | undefined {
  return (Provider.ctx as { state?: Record<string, unknown> } | undefined)?.state;
}

/** A Koa context inside oidc-provider (in a middleware before the provider's own, `oidc` is not there yet). */
type OidcContext = { oidc?: KoaContextWithOIDC['oidc'] };

/**
 * oidc-provider 9.13 (checked against 9.13.3): `ctx.oidc.params` holds the token request's parameters (those the grant
 * registered, plus the client authentication ones): a string, undefined, or an array for a
 * parameter registered as allowing duplicates.
 */
export const providerParams = (ctx: object): Record<string, unknown> => (ctx as OidcContext).oidc?.params ?? {};

/** oidc-provider 9.13 (checked against 9.13.3): `ctx.oidc.body` is the whole decoded form, parameters it does not know included. */
export const providerBody = (ctx: object): Record<string, unknown> => (ctx as OidcContext).oidc?.body ?? {};

/** oidc-provider 9.13 (checked against 9.13.3): once authenticated, `ctx.oidc.client` has `clientId` and `clientAuthMethod`. */
export const providerClient = (ctx: object): { clientId: string; clientAuthMethod: string } | undefined =>
  (ctx as OidcContext).oidc?.client as { clientId: string; clientAuthMethod: string } | undefined;

/** oidc-provider 9.13 (checked against 9.13.3) reads bodies of at most 56 KiB itself (lib/shared/selective_body.js `LIMIT`). */
export const PROVIDER_BODY_LIMIT = 56 * 1024;
