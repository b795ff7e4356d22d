import type { Request, Response } from 'express';
import { createLocalJWKSet, jwtVerify } from 'jose';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import type { Agent } from '../store/agents.ts';
import { replayGuard } from '../store/replay.ts';
import { secretMatches } from '../keys/keyring.ts';
import { isWellFormedId } from '../ids.ts';
import { assertionPayload, assertionReplayKey, checkAssertionTimes } from '../agents/client-assertion.ts';
import { assertionReplayId } from './internals.ts';
import { assertMayUse, type AgentUse } from '../agents/standing.ts';
import { type Form, single } from './form.ts';
import { basicCredentials } from './basic-auth.ts';
import { attemptOf } from './refusals.ts';
import { CLIENT_ASSERTION_ALGS, CLIENT_ASSERTION_TYPE } from '../protocol/constants.ts';

const ASSERTION_TYPE = CLIENT_ASSERTION_TYPE;
const ASSERTION_ALGS = [...CLIENT_ASSERTION_ALGS];
const fail = (why: string): CordonError => new CordonError('invalid_client', why, { reason: 'client_auth_failed' });

/**
 * Client authentication for the endpoints the broker serves itself (/introspect, /revoke):
 * the same three methods oidc-provider accepts at /token, against the same agent records.
 */
export async function authenticateClient(b: Broker, req: Request, res: Response, form: Form, use: AgentUse): Promise<Agent> {
  const agent = await authenticate(b, req, res, form);
  attemptOf(req, res).by(agent.id); // for the audit row if the request is refused after this
  assertMayUse(agent, use);
  return agent;
}

async function authenticate(b: Broker, req: Request, res: Response, form: Form): Promise<Agent> {
  const header = req.headers.authorization;
  const bodySecret = single(form, 'client_secret');
  const assertion = single(form, 'client_assertion');
  if ([header, bodySecret, assertion].filter(Boolean).length > 1) throw new CordonError('invalid_request', 'client authentication must use exactly one method');
  let clientId = single(form, 'client_id');
  let secret: string | undefined;
  if (header) {
    res.locals.basicAuth = true;
    const basic = basicCredentials(header);
    if ('malformed' in basic) throw fail(basic.malformed);
    if (clientId !== undefined && clientId !== basic.id) throw new CordonError('invalid_request', 'client_id does not match the Authorization header');
    clientId = basic.id;
    secret = basic.secret;
  } else if (bodySecret) {
    secret = bodySecret;
  }
  if (assertion) {
    if (single(form, 'client_assertion_type') !== ASSERTION_TYPE) throw new CordonError('invalid_request', `client_assertion_type must be ${ASSERTION_TYPE}`);
    return assertionAuth(b, req, assertion, clientId);
  }
  if (!clientId || secret === undefined) throw fail('client authentication is required');
  if (!isWellFormedId(clientId)) throw fail('unknown client');
  const agent = await b.live.agents.get(b.read, clientId);
  if (!agent || agent.authMethod === 'private_key_jwt' || !secretMatches(b.secretHashKey, secret, agent.secretHash)) throw fail('invalid client credentials');
  if (agent.status === 'revoked') throw fail('agent is revoked');
  return agent;
}

async function assertionAuth(b: Broker, req: Request, assertion: string, claimedId: string | undefined): Promise<Agent> {
  const sub = assertionPayload(assertion)?.sub;
  if (!isWellFormedId(sub) || (claimedId && claimedId !== sub)) throw fail('client_assertion sub is not a known client');
  const agent = await b.live.agents.get(b.read, sub);
  if (!agent || agent.authMethod !== 'private_key_jwt' || !agent.jwks) throw fail('client does not use private_key_jwt');
  if (agent.status === 'revoked') throw fail('agent is revoked');
  const endpoint = `${b.config.issuer}${req.path}`;
  try {
    const { payload } = await jwtVerify(assertion, createLocalJWKSet(agent.jwks as never), {
      algorithms: ASSERTION_ALGS,
      issuer: agent.id,
      subject: agent.id,
      audience: [b.config.issuer, endpoint, `${b.config.issuer}/token`],
      currentDate: new Date(b.clock.now()),
      clockTolerance: b.config.clockSkewSec,
      requiredClaims: ['exp', 'jti'],
      maxTokenAge: undefined,
    });
    checkAssertionTimes(b, payload);
    if (typeof payload.jti !== 'string' || payload.jti === '' || payload.jti.length > 256) throw fail('client_assertion jti must be a non-empty string');
    // Kept as long as the assertion is accepted: until exp plus the tolerated skew (checkAssertionTimes).
    const exp = (payload.exp as number) * 1000 + b.config.clockSkewSec * 1000;
    if (!(await replayGuard.claim(b.db, assertionReplayKey(assertionReplayId(agent.id, payload.jti)), exp, b.clock.now())))
      throw fail('client_assertion has been used before');
  } catch (e) {
    if (e instanceof CordonError) throw e;
    throw fail('client_assertion could not be verified');
  }
  return agent;
}
