import { ProviderError, backendText, networkErrorKind } from './provider.ts';

/** AWS SDK errors → ProviderError with a description an admin can act on. */
export function stsError(op: string, e: unknown, o: { timeoutMs: number; region: string; roleArn?: string }): ProviderError {
  const roleArn = o.roleArn;
  if (e instanceof ProviderError) return e;
  const err = e as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const code = err?.name ?? 'Error';
  const msg = backendText(err?.message);
  const status = err?.$metadata?.httpStatusCode;
  const on = roleArn ? ` on ${roleArn}` : '';
  if (code === 'CredentialsProviderError')
    return new ProviderError('aws-sts', 'misconfigured', 'the broker has no AWS credentials: the SDK credential chain found none', e);
  if (status === undefined) {
    const net = networkErrorKind(e);
    if (net === 'timeout') return new ProviderError('aws-sts', 'timeout', `AWS ${op} did not answer within ${o.timeoutMs} ms`, e);
    if (net === 'down')
      return new ProviderError(
        'aws-sts',
        'down',
        `AWS ${op.startsWith('AssumeRole') || op === 'GetCallerIdentity' ? 'STS' : 'IAM'} is unreachable (${(e as { code?: string }).code ?? 'connection failed'})`,
        e,
      );
  }
  if (code === 'Throttling' || code === 'ThrottlingException' || code === 'RequestLimitExceeded' || status === 429)
    return new ProviderError('aws-sts', 'throttled', `AWS is throttling ${op}`, e);
  if (status === 503 || code === 'ServiceUnavailable' || code === 'ServiceUnavailableException')
    return new ProviderError('aws-sts', 'down', `AWS ${op} is unavailable (503)`, e);
  if (code === 'AccessDenied' || code === 'AccessDeniedException')
    return new ProviderError(
      'aws-sts',
      'refused',
      `AWS refused ${op}${on} (AccessDenied): the role's trust policy must let the broker call sts:AssumeRole, sts:TagSession and sts:SetSourceIdentity${op === 'PutRolePolicy' ? ', and the broker needs iam:PutRolePolicy on the role' : ''}`,
      e,
    );
  if (
    code === 'InvalidClientTokenId' ||
    code === 'SignatureDoesNotMatch' ||
    code === 'ExpiredToken' ||
    code === 'ExpiredTokenException' ||
    code === 'UnrecognizedClientException'
  )
    return new ProviderError('aws-sts', 'misconfigured', `AWS rejected the broker's own credentials (${code})`, e);
  if (code === 'RegionDisabledException') return new ProviderError('aws-sts', 'misconfigured', `STS is not activated in region ${o.region}`, e);
  if (code === 'LimitExceeded' || code === 'LimitExceededException')
    return new ProviderError('aws-sts', 'refused', `IAM refused ${op}${on} (LimitExceeded: the role's inline policies are full): ${msg}`, e);
  if (code === 'NoSuchEntity' || code === 'NoSuchEntityException')
    return new ProviderError('aws-sts', 'not_found', `IAM has no such role${on} (NoSuchEntity)`, e);
  if (
    code === 'ValidationError' ||
    code === 'MalformedPolicyDocument' ||
    code === 'MalformedPolicyDocumentException' ||
    code === 'PackedPolicyTooLarge' ||
    code === 'PackedPolicyTooLargeException'
  )
    return new ProviderError('aws-sts', 'refused', `AWS rejected ${op}${on} (${code}): ${msg}`, e);
  return new ProviderError('aws-sts', 'bad_answer', `AWS ${op} failed (${code}${status ? ` ${status}` : ''}${msg ? `: ${msg}` : ''})`, e);
}
