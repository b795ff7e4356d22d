import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_BOOTSTRAP } from '../../protocol/constants.ts';
import type { BrokerClient } from '../broker-client.ts';
import type { Form, TokenAnswer } from '../token-answer.ts';
import type { TokenSource } from './source.ts';

/**
 * A one-time bootstrap token (`cordon agent bootstrap`), exchanged for one session. The broker
 * renews workload sessions only by a new exchange, so tokens are used until they expire.
 */
export class BootstrapSource implements TokenSource {
  readonly mode = 'bootstrap';
  readonly endsSessions = true;
  readonly cannotRenew = 'the token of this bootstrap session has expired and cannot be renewed without a client credential; call startSession() again';
  readonly #broker: BrokerClient;
  readonly #token: string;

  constructor(broker: BrokerClient, bootstrapToken: string) {
    this.#broker = broker;
    this.#token = bootstrapToken;
  }

  open(form: Form): Promise<TokenAnswer> {
    return this.#broker.tokenRequest([...form, ['grant_type', GRANT_TOKEN_EXCHANGE], ['subject_token', this.#token], ['subject_token_type', TOKEN_TYPE_BOOTSTRAP]], 'session start', { endSession: true });
  }
}
