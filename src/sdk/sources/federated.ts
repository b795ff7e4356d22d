import { readFileSync } from 'node:fs';
import { TOKEN_TYPE_JWT } from '../../protocol/constants.ts';
import type { BrokerClient } from '../broker-client.ts';
import { CordonSdkError } from '../errors.ts';
import { JWS_SHAPE } from '../token-answer.ts';
import { SubjectTokenSource } from './subject-token.ts';

/**
 * An external JWT in a file (a Kubernetes projected token, a CI OIDC token), re-read at each
 * exchange since its issuer rotates it. Each exchange opens a new session.
 */
export const federatedSource = (broker: BrokerClient, file: string): SubjectTokenSource =>
  new SubjectTokenSource('federated', broker, () => ({ token: readJwt(file), type: TOKEN_TYPE_JWT }));

function readJwt(file: string): string {
  let jwt: string;
  try {
    jwt = readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new CordonSdkError('config', `federated token file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!JWS_SHAPE.test(jwt)) throw new CordonSdkError('config', `federated token file ${file} does not hold a JWT`);
  return jwt;
}
