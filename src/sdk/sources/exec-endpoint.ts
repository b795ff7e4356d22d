import { CordonSdkError } from '../errors.ts';
import { requestJson, type HttpOptions } from '../http.ts';
import { parseTokenAnswer, refusedWith, type TokenAnswer } from '../token-answer.ts';
import type { TokenSource } from './source.ts';

/**
 * `cordon exec`'s local token endpoint: fresh tokens of the session exec holds, for an
 * authorization value, without any secret here. exec opens and ends the session.
 */
export class ExecEndpointSource implements TokenSource {
  readonly mode = 'local';
  readonly endsSessions = false;
  readonly startsOnFirstUse = true;
  readonly cannotOpen = "an agent running on cordon exec's token endpoint cannot open sessions";
  readonly #http: HttpOptions;
  readonly #uri: string;
  readonly #authorization: string;

  constructor(http: HttpOptions, tokenUri: string, tokenAuthorization: string) {
    this.#http = http;
    this.#uri = tokenUri;
    this.#authorization = tokenAuthorization;
  }

  async renew(): Promise<TokenAnswer> {
    let body: unknown;
    try {
      ({ body } = await requestJson(this.#http, this.#uri, { method: 'GET', headers: { authorization: this.#authorization } }, 'local token endpoint'));
    } catch (e) {
      if (refusedWith(e, 'invalid_grant', 'session_ended')) {
        throw new CordonSdkError('session_ended', `the session has ended: ${e.error_description ?? e.error}`, {
          error: e.error,
          error_description: e.error_description,
          status: e.status,
          cause: e,
        });
      }
      throw e;
    }
    return parseTokenAnswer(body, 'local token endpoint');
  }
}
