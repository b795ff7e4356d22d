/**
 * Run by examples/exec-aws.sh under `cordon exec`: a plain AWS SDK v3 client with no credentials
 * configured. The SDK's default chain finds the container-credentials endpoint that `cordon exec`
 * serves, so the keys are the broker's session-bound, downscoped STS credentials.
 */
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';

const sts = new STSClient({ region: process.env.AWS_REGION ?? 'us-east-1' });
const me = await sts.send(new GetCallerIdentityCommand({}));
const creds = await sts.config.credentials();
console.log(`aws-whoami: ${me.Arn}`);
console.log(`aws-whoami: key ${creds.accessKeyId} expires ${creds.expiration?.toISOString()}`);
