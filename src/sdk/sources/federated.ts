import { readFileSync } from 'node:fs';
import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT } from '../../protocol/constants.ts';
import type { BrokerClient } from '../broker-client.ts';
import { CordonSdkError } from '../errors.ts';
import { JWS_SHAPE, type Form, type TokenAnswer } from '../token-answer.ts';
import type { TokenSource } from './source.ts';

/**
 * An external JWT in a file (a Kubernetes projected token, a CI OIDC token), re-read at each
 * exchange since its issuer rotates it. Each exchange opens a new session; tokens are not renewed.
 */
export class FederatedSource implements TokenSource {
  readonly mode = 'federated';
  readonly endsSessions = true;
  readonly cannotRenew = 'the token of this federated session has expired and cannot be renewed without a client credential; call startSession() again';
  readonly #broker: BrokerClient;
  readonly #file: string;

  constructor(broker: BrokerClient, federatedTokenFile: string) {
    this.#broker = broker;
    this.#file = federatedTokenFile;
  }

  open(form: Form): Promise<TokenAnswer> {
    return this.#broker.tokenRequest([...form, ['grant_type', GRANT_TOKEN_EXCHANGE], ['subject_token', this.#read()], ['subject_token_type', TOKEN_TYPE_JWT]], 'session start', { endSession: true });
  }

  #read(): string {
    let jwt: string;
    try {
      jwt = readFileSync(this.#file, 'utf8').trim();
    } catch (e) {
      throw new CordonSdkError('config', `federated token file ${this.#file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!JWS_SHAPE.test(jwt)) throw new CordonSdkError('config', `federated token file ${this.#file} does not hold a JWT`);
    return jwt;
  }
}
