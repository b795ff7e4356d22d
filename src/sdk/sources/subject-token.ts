import { GRANT_TOKEN_EXCHANGE } from '../../protocol/constants.ts';
import type { BrokerClient } from '../broker-client.ts';
import type { Form, TokenAnswer } from '../token-answer.ts';
import type { TokenSource } from './source.ts';

/**
 * A session opened by exchanging a subject token the workload holds (RFC 8693): a bootstrap token
 * or an external JWT. The broker renews such sessions only by a new exchange, so tokens are used
 * until they expire.
 */
export class SubjectTokenSource implements TokenSource {
  readonly endsSessions = true;
  readonly mode: 'bootstrap' | 'federated';
  readonly cannotRenew: string;
  readonly #broker: BrokerClient;
  readonly #subject: () => { token: string; type: string };

  constructor(mode: 'bootstrap' | 'federated', broker: BrokerClient, subject: () => { token: string; type: string }) {
    this.mode = mode;
    this.cannotRenew = `the token of this ${mode} session has expired and cannot be renewed without a client credential; call startSession() again`;
    this.#broker = broker;
    this.#subject = subject;
  }

  open(form: Form): Promise<TokenAnswer> {
    const s = this.#subject();
    return this.#broker.tokenRequest(
      [...form, ['grant_type', GRANT_TOKEN_EXCHANGE], ['subject_token', s.token], ['subject_token_type', s.type]],
      'session start',
      { endSession: true },
    );
  }
}
