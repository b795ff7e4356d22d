import type { BrokerClient } from '../broker-client.ts';
import { CordonSdkError } from '../errors.ts';
import type { CordonAgentOptions } from '../types.ts';
import { bootstrapSource } from './bootstrap.ts';
import { ClientCredentialSource } from './client-credential.ts';
import { ExecEndpointSource } from './exec-endpoint.ts';
import { federatedSource } from './federated.ts';
import { HandedOverSource } from './handed-over.ts';
import type { TokenSource } from './source.ts';

export type { TokenSource } from './source.ts';

/** The way of starting the options give, first match wins: `cordon exec`'s endpoint, a client credential, a bootstrap token, a federated token file, a handed-over token. */
export function tokenSourceFor(opts: CordonAgentOptions, broker: BrokerClient): TokenSource {
  if (opts.tokenUri) {
    if (!opts.tokenAuthorization) throw new CordonSdkError('config', 'tokenUri needs tokenAuthorization (CORDON_TOKEN_AUTHORIZATION)');
    return new ExecEndpointSource(broker.http, opts.tokenUri, opts.tokenAuthorization);
  }
  if (opts.clientSecret !== undefined || opts.privateKey !== undefined) {
    if (!opts.clientId) throw new CordonSdkError('config', 'clientId is required with a client secret or private key (CORDON_CLIENT_ID)');
    if (opts.clientSecret !== undefined && opts.privateKey !== undefined) throw new CordonSdkError('config', 'give a client secret or a private key, not both');
    return new ClientCredentialSource(broker, opts.clientSecret !== undefined ? 'secret' : 'private_key_jwt');
  }
  if (opts.bootstrapToken !== undefined) return bootstrapSource(broker, opts.bootstrapToken);
  if (opts.federatedTokenFile !== undefined) return federatedSource(broker, opts.federatedTokenFile);
  if (opts.accessToken !== undefined) return new HandedOverSource(opts.accessToken);
  throw new CordonSdkError(
    'config',
    'no credentials: give a client secret, a private key, a bootstrap token, a federated token file or an access token (CORDON_CLIENT_SECRET, CORDON_PRIVATE_KEY_FILE, CORDON_BOOTSTRAP_TOKEN, CORDON_FEDERATED_TOKEN_FILE, CORDON_TOKEN)',
  );
}
