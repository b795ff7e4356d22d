import express, { type Express, type Request, type Response, type NextFunction } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { createProvider } from './provider.ts';
import { errorMiddleware, handle, sendError } from './errors.ts';
import { introspectEndpoint, jwksEndpoint, revocationsEndpoint, revokeEndpoint } from './endpoints.ts';
import { providersOf } from '../tokens/credentials.ts';

export interface AppExtensions {
  /** Routes other modules add (credentials, metrics); mounted before the OAuth provider. */
  routes?: Array<(app: Express, b: Broker) => void>;
  /** Middleware mounted ahead of every route (request logging, metrics). */
  before?: Array<(app: Express, b: Broker) => void>;
}

/**
 * The broker's HTTP surface. Cordon's own endpoints parse their bodies themselves; the
 * OAuth provider is mounted last with no body parser in front of it, as oidc-provider needs.
 */
export async function createApp(b: Broker, ext: AppExtensions = {}): Promise<Express> {
  const provider = await createProvider(b);
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  // A reply sent before the request body was read to its end (a body over the limit, a refusal
  // made on the headers) must not leave the rest of that body on a keep-alive connection: the
  // server would wait on it as the next request and the connection would hang. Tell the client
  // the connection closes, and close it.
  app.use((req, res, next) => {
    const writeHead = res.writeHead;
    res.writeHead = function patched(this: Response, ...args: unknown[]) {
      if (!req.complete && !res.headersSent) res.setHeader('Connection', 'close');
      return (writeHead as (...a: unknown[]) => Response).apply(this, args);
    } as typeof res.writeHead;
    res.on('finish', () => {
      if (!req.complete) req.socket.destroy();
    });
    next();
  });
  for (const add of ext.before ?? []) add(app, b);
  const form = express.raw({ type: 'application/x-www-form-urlencoded', limit: b.config.bodyLimitBytes });

  app.post('/introspect', form, handle(introspectEndpoint(b)));
  app.post('/revoke', form, handle(revokeEndpoint(b)));
  app.get('/revocations', handle(revocationsEndpoint(b)));
  app.get('/jwks', handle(jwksEndpoint(b)));
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', handle(async (_req, res) => {
    // Backends are reported, not required: tokens are still issued while Vault or STS is down.
    const providers = Object.fromEntries(
      await Promise.all([...providersOf(b)].map(async ([name, p]) => [name, await p.health().catch((e: Error) => ({ ok: false, detail: e.message }))] as const)),
    );
    const degraded = Object.values(providers).some((h) => !h.ok);
    try {
      await b.db.raw('select 1');
      res.json({ status: degraded ? 'degraded' : 'ready', database: 'ok', providers });
    } catch {
      res.status(503).json({ status: 'unavailable', database: 'down', providers });
    }
  }));
  for (const add of ext.routes ?? []) add(app, b);

  // RFC 8414 metadata is the same document as OpenID discovery here.
  app.get('/.well-known/oauth-authorization-server', (req, _res, next) => {
    req.url = '/.well-known/openid-configuration';
    next();
  });
  // The token endpoint takes forms only; anything else is refused before the provider sees it.
  app.post('/token', (req: Request, res: Response, next: NextFunction) => {
    if (!req.is('application/x-www-form-urlencoded')) return sendError(res, new CordonError('invalid_request', 'content type must be application/x-www-form-urlencoded', { reason: 'content_type' }));
    const len = Number(req.headers['content-length'] ?? 0);
    if (len > b.config.bodyLimitBytes) return sendError(res, new CordonError('invalid_request', 'request body is too large', { status: 413, reason: 'body_too_large' }));
    next();
  });
  const callback = provider.callback();
  app.use((req, res) => {
    callback(req, res);
  });
  app.use(errorMiddleware(b.log));
  return app;
}
