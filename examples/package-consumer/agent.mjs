// Plain JavaScript, no TypeScript loader: the SDK and the middleware come from the built package.
import { CordonAgent, isCordonSdkError } from 'cordon';
import { requireAgentToken, RevocationSet } from 'cordon/middleware';

const agent = CordonAgent.fromEnv();
const session = await agent.startSession({ scope: process.env.SCOPE ?? 'docs:read', task: 'package-consumer' });
const token = await agent.token();
await agent.close();
let closedError = null;
try {
  await agent.token();
} catch (e) {
  closedError = isCordonSdkError(e) ? e.code : 'not a CordonSdkError';
}
console.log(
  JSON.stringify({
    sid: session.sid,
    scope: session.scope,
    tokenParts: token.split('.').length,
    closedError,
    middleware: typeof requireAgentToken,
    revocationSet: typeof new RevocationSet().isRevoked,
  }),
);
