import express, { type ErrorRequestHandler, type Express, type Request, type RequestHandler, type Response, type NextFunction } from 'express';
import type { Broker } from '../broker.ts';
import { ping } from '../store/db.ts';
import { CordonError } from '../errors.ts';
import type { Attempted } from '../store/audit-events.ts';
import { createProvider } from './provider.ts';
import { errorMiddleware, handle } from './errors.ts';
import { auditErrors, audited, refuse } from './refusals.ts';
import { introspectEndpoint, jwksEndpoint, revocationsEndpoint, revokeEndpoint } from './endpoints.ts';
import { PROVIDER_BODY_LIMIT, beforeHeadWritten, methodsRoutedAt } from './internals.ts';

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
    beforeHeadWritten(res, () => {
      if (bodyPending(req) && !res.headersSent) res.setHeader('Connection', 'close');
    });
    res.on('finish', () => {
      if (!bodyPending(req)) return;
      // Closed gracefully first (a destroy would reset the connection and could take the
      // answer with it); a client that keeps sending is cut off shortly after.
      req.socket.end();
      setTimeout(() => req.socket.destroy(), 1000).unref();
    });
    next();
  });
  for (const add of ext.before ?? []) add(app, b);
  app.use(refuseRepeatedHeaders(b));
  app.post('/introspect', ...formBody(b, 'introspect'), audited(b, 'introspect', introspectEndpoint(b)));
  app.post('/revoke', ...formBody(b, 'revoke'), audited(b, 'revoke', revokeEndpoint(b)));
  app.get('/revocations', audited(b, 'revocations', revocationsEndpoint(b)));
  app.get('/jwks', handle(jwksEndpoint(b)));
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get(
    '/readyz',
    handle(async (_req, res) => {
      // Backends are reported, not required: tokens are still issued while Vault or STS is down.
      const providers = Object.fromEntries(
        await Promise.all([...b.providers].map(async ([name, p]) => [name, await p.health().catch((e: Error) => ({ ok: false, detail: e.message }))] as const)),
      );
      const degraded = Object.values(providers).some((h) => !h.ok);
      try {
        await ping(b.db);
        res.json({ status: degraded ? 'degraded' : 'ready', database: 'ok', providers });
      } catch {
        res.status(503).json({ status: 'unavailable', database: 'down', providers });
      }
    }),
  );
  for (const add of ext.routes ?? []) add(app, b);

  // oidc-provider serves exactly these; its other routes (authorization, end-session, PAR…) are
  // never reached, as discovery says. RFC 8414 metadata is the same document as OpenID discovery.
  const callback = provider.callback();
  const toProvider = (req: Request, res: Response): void => {
    void callback(req, res); // Koa answers its own errors: this promise does not reject
  };
  app.get('/.well-known/openid-configuration', toProvider);
  app.get('/.well-known/oauth-authorization-server', (req, res) => {
    req.url = '/.well-known/openid-configuration';
    toProvider(req, res);
  });
  // The token endpoint takes forms only, unencoded and within the provider's own size limit;
  // anything else is refused before the provider sees it.
  const tokenBodyLimit = Math.min(b.config.bodyLimitBytes, PROVIDER_BODY_LIMIT);
  app.post(
    '/token',
    (req: Request, res: Response, next: NextFunction) => {
      const refusal = tokenRequestRefusal(req, tokenBodyLimit);
      if (refusal) return void refuse(b, req, res, refusal, 'token');
      next();
    },
    toProvider,
  );
  // Anything else: 405 with Allow on a path the broker serves, 404 elsewhere; JSON either way.
  app.use((req: Request, res: Response) => {
    const allowed = methodsRoutedAt(app, req.path);
    if (allowed.length) {
      res.setHeader('Allow', allowed.join(', '));
      return void refuse(
        b,
        req,
        res,
        new CordonError('invalid_request', `${req.method} is not served on ${req.path}; use ${allowed.join(' or ')}`, {
          status: 405,
          reason: 'method_not_allowed',
        }),
      );
    }
    void refuse(b, req, res, new CordonError('not_found', 'no such endpoint', { reason: 'no_route' }));
  });
  // Whatever 4xx no route audited (the router's own refusals, e.g. a path that does not decode).
  app.use(auditErrors(b));
  app.use(errorMiddleware(b.log));
  return app;
}

/** Is part of the request body still to come? (A request without one is complete as soon as it is handled.) */
const bodyPending = (req: Request): boolean =>
  !req.complete && (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0);

/**
 * The raw form body for Cordon's own endpoints. A declared length over the limit is refused at
 * once (body-parser would first read the whole upload, however slowly it comes), and what the
 * parser refuses (too large when chunked, an unknown encoding) is audited like any refusal.
 */
function formBody(b: Broker, attempted: Attempted): Array<RequestHandler | ErrorRequestHandler> {
  const tooLarge = (req: Request, res: Response, next: NextFunction): void => {
    if (Number(req.headers['content-length'] ?? 0) > b.config.bodyLimitBytes)
      return void refuse(b, req, res, new CordonError('invalid_request', 'request body is too large', { status: 413, reason: 'body_too_large' }), attempted);
    next();
  };
  const parse = express.raw({ type: 'application/x-www-form-urlencoded', limit: b.config.bodyLimitBytes });
  return [tooLarge, parse, auditErrors(b, attempted)];
}

/** What the token endpoint refuses on the headers alone, before the provider reads the body. */
function tokenRequestRefusal(req: Request, limit: number): CordonError | undefined {
  if (!req.is('application/x-www-form-urlencoded'))
    return new CordonError('invalid_request', 'content type must be application/x-www-form-urlencoded', { reason: 'content_type' });
  const encoding = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity')
    return new CordonError('invalid_request', 'the token endpoint takes unencoded bodies only', { status: 415, reason: 'content_encoding' });
  if (Number(req.headers['content-length'] ?? 0) > limit)
    return new CordonError('invalid_request', 'request body is too large', { status: 413, reason: 'body_too_large' });
  return undefined;
}

/**
 * Node keeps only the first of repeated Authorization headers and joins repeated unknown ones
 * (DPoP) with a comma: either way the request is ambiguous about who is calling, so it is refused.
 */
const SINGLE_HEADERS = new Set(['authorization', 'dpop', 'content-type', 'content-encoding']);
const refuseRepeatedHeaders =
  (b: Broker) =>
  (req: Request, res: Response, next: NextFunction): void => {
    const seen = new Set<string>();
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i].toLowerCase();
      if (!SINGLE_HEADERS.has(name)) continue;
      if (seen.has(name))
        return void refuse(b, req, res, new CordonError('invalid_request', `the ${name} header must appear once`, { reason: 'duplicate_header' }));
      seen.add(name);
    }
    next();
  };
