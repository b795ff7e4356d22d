import { TOKEN_TYPE_BOOTSTRAP } from '../../protocol/constants.ts';
import type { BrokerClient } from '../broker-client.ts';
import { SubjectTokenSource } from './subject-token.ts';

/** A one-time bootstrap token (`cordon agent bootstrap`), exchanged for one session. */
export const bootstrapSource = (broker: BrokerClient, bootstrapToken: string): SubjectTokenSource =>
  new SubjectTokenSource('bootstrap', broker, () => ({ token: bootstrapToken, type: TOKEN_TYPE_BOOTSTRAP }));
