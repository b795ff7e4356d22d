import type { NextFunction, Request, Response } from 'express';
import { DPOP_ALGS } from '../protocol/constants.ts';
import { AgentTokenError, type AgentIdentity } from './agent-token-error.ts';
import type { JwksCache } from './jwks.ts';
import type { RevocationSet } from './revocation-feed.ts';
import { createAgentTokenVerifier, type AgentTokenVerifierOptions, type VerifyInput } from './token-verifier.ts';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      agent?: AgentIdentity;
    }
  }
}

export interface RequireAgentTokenOptions extends AgentTokenVerifierOptions {
  /** The URL the client used (DPoP `htu`); default from the request (honours express `trust proxy`). */
  htu?: (req: Request) => string;
  realm?: string;
  /** Called for every refusal (for logs and metrics); must not throw. */
  onRefuse?: (err: AgentTokenError, req: Request) => void;
}

export interface AgentTokenMiddleware {
  (req: Request, res: Response, next: NextFunction): void;
  /** Verifies a token as the middleware would, without HTTP (for other frameworks and benchmarks). */
  verify(input: VerifyInput): Promise<AgentIdentity>;
  /** Reads the revocation feed now (also done every pollIntervalMs). */
  pollNow(): Promise<void>;
  /** Resolves once a read of the feed that starts after this call has finished (the next scheduled one, or pollNow()). */
  nextPoll(): Promise<void>;
  /** Resolves once the JWKS and the feed have been read once. */
  ready(): Promise<void>;
  /** Stops polling. */
  close(): void;
  readonly revocations: RevocationSet;
  readonly jwks: JwksCache;
}

const quote = (s: string): string => s.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, "'");

/**
 * Express middleware for resource servers: verifies Cordon access tokens offline against the
 * broker's JWKS, follows the revocation feed, checks DPoP proofs for bound tokens, and puts
 * the caller on `req.agent`. Anything it cannot verify is refused (401/403 with a
 * `WWW-Authenticate` challenge per RFC 6750 / RFC 9449).
 */
export function requireAgentToken(opts: RequireAgentTokenOptions): AgentTokenMiddleware {
  const v = createAgentTokenVerifier(opts);
  const audience = Array.isArray(opts.audience) ? opts.audience : [opts.audience];
  const realm = opts.realm ?? audience[0];
  const fail = (code: AgentTokenError['code'], reason: string, msg: string) => new AgentTokenError(code, reason, msg);

  const challenge = (err: AgentTokenError | null, scheme: 'bearer' | 'dpop' | null): string[] => {
    const params = (e: AgentTokenError | null) =>
      e
        ? `, error="${e.code}", error_description="${quote(e.message)}"${e.code === 'insufficient_scope' ? `, scope="${quote(v.requiredScopes.join(' '))}"` : ''}`
        : '';
    const bearer = `Bearer realm="${quote(realm)}"`;
    const dpop = `DPoP algs="${DPOP_ALGS.join(' ')}"`;
    // RFC 6750 §3.1: no error code when the request carried no credentials at all.
    if (!err || err.reason === 'missing') return [bearer, dpop];
    const useDpop = scheme === 'dpop' || err.code === 'invalid_dpop_proof' || err.reason === 'dpop_required';
    return useDpop ? [`${dpop}${params(err)}`] : [`${bearer}${params(err)}`];
  };

  const htuOf = opts.htu ?? ((req: Request) => `${req.protocol}://${req.get('host') ?? 'localhost'}${req.originalUrl.split('?')[0]}`);

  const mw = ((req: Request, res: Response, next: NextFunction): void => {
    const authorization = req.headers.authorization;
    const dpopHeader = req.headers.dpop;
    const scheme = /^dpop /i.test(authorization ?? '') ? 'dpop' : /^bearer /i.test(authorization ?? '') ? 'bearer' : null;
    const run = async (): Promise<AgentIdentity> => {
      if (Array.isArray(dpopHeader) || (typeof dpopHeader === 'string' && dpopHeader.includes(',')))
        throw fail('invalid_dpop_proof', 'dpop_invalid', 'exactly one DPoP header is allowed');
      return v.verify({ authorization, dpop: dpopHeader, method: req.method, url: htuOf(req) });
    };
    run().then(
      (agent) => {
        req.agent = agent;
        next();
      },
      (e: unknown) => {
        const err = e instanceof AgentTokenError ? e : fail('invalid_token', 'malformed', 'the token could not be verified');
        try {
          opts.onRefuse?.(err, req);
        } catch {
          /* a logging hook must not change the answer */
        }
        res.setHeader('WWW-Authenticate', challenge(err, scheme));
        res.setHeader('Cache-Control', 'no-store');
        if (err.reason === 'missing') {
          res.status(401).end();
          return;
        }
        res.status(err.status).json({ error: err.code, error_description: err.message });
      },
    );
  }) as AgentTokenMiddleware;

  mw.verify = (input) => v.verify(input);
  mw.pollNow = () => v.feed.poll();
  mw.nextPoll = () => v.feed.nextPoll();
  mw.ready = async () => {
    await Promise.all([v.feed.first(), v.jwks.loaded ? Promise.resolve() : v.jwks.refresh()]);
  };
  mw.close = () => v.close();
  Object.defineProperty(mw, 'revocations', { get: () => v.feed.set });
  Object.defineProperty(mw, 'jwks', { get: () => v.jwks });
  return mw;
}
