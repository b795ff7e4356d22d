import { createHash, timingSafeEqual } from 'node:crypto';
import type { Express, NextFunction, Request, Response } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { refuse } from './refusals.ts';
import { label, metricsFor } from '../observability/metrics.ts';

/** Routes the OAuth provider serves (not express routes); everything else unmatched is `unmatched`. */
const PROVIDER_ROUTES = new Set(['/token', '/jwks', '/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']);

/** Mount first: times every request by route and serves `GET /metrics`. */
export function mountMetrics(app: Express, b: Broker, opts: { defaultMetrics?: boolean } = {}): void {
  const m = metricsFor(b, opts);
  app.use((req: Request, res: Response, next: NextFunction) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const routePath = (req.route as { path?: unknown } | undefined)?.path;
      const route = typeof routePath === 'string' ? routePath : PROVIDER_ROUTES.has(req.path) ? req.path : 'unmatched';
      m.httpDuration.observe(
        { method: label(req.method.toLowerCase(), /^[a-z]{1,10}$/), route, status: String(res.statusCode) },
        Number(process.hrtime.bigint() - start) / 1e9,
      );
    });
    next();
  });
  const allowed = metricsReader(b);
  app.get('/metrics', (req, res, next) => {
    if (!allowed(req.headers.authorization)) return void refuse(b, req, res, metricsTokenRefusal(), 'metrics');
    m.registry
      .metrics()
      .then((text) => {
        res.setHeader('Cache-Control', 'no-store');
        res.type(m.registry.contentType).send(text);
      })
      .catch(next);
  });
}

/**
 * Who may read metrics (the broker's `/metrics`, and the gateway's when it serves alone): anyone
 * when CORDON_METRICS_TOKEN is unset, otherwise only `Authorization: Bearer` with its value.
 */
export function metricsReader(b: Broker): (authorization: string | undefined) => boolean {
  const wanted = b.config.metricsToken === undefined ? undefined : digest(b.config.metricsToken);
  return (authorization) => !wanted || bearerMatches(authorization, wanted);
}

export const metricsTokenRefusal = (): CordonError =>
  new CordonError('invalid_token', 'GET /metrics wants Authorization: Bearer with the CORDON_METRICS_TOKEN value', { status: 401, reason: 'metrics_token' });

const digest = (v: string): Buffer => createHash('sha256').update(v).digest();

/** Constant-time over the digests, so neither the token nor its length leaks through timing. */
function bearerMatches(header: string | undefined, wanted: Buffer): boolean {
  const m = /^Bearer ([^\s]+)$/i.exec(header ?? '');
  return m !== null && timingSafeEqual(digest(m[1]), wanted);
}
