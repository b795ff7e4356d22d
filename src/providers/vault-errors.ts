import { ProviderError, backendText, networkErrorKind } from './provider.ts';

/** Vault's failures as ProviderErrors with a clear, secret-free description an admin can act on. */
export function vaultError(op: string, e: unknown, timeoutMs: number, loginVar?: string): ProviderError {
  if (e instanceof ProviderError) return e;
  const resp = (e as { response?: { statusCode?: number; body?: { errors?: unknown[] } } }).response;
  if (resp?.statusCode) {
    const status = resp.statusCode;
    const msg = backendText(Array.isArray(resp.body?.errors) ? resp.body.errors.join('; ') : '');
    if (status === 503 && /sealed/i.test(msg))
      return new ProviderError('vault', 'sealed', 'Vault is sealed: no credential can be issued until an operator unseals it', e);
    if (status === 503) return new ProviderError('vault', 'down', `Vault is unavailable (503${msg ? `: ${msg}` : ''})`, e);
    if (status === 429) return new ProviderError('vault', 'throttled', 'Vault is rate limiting the broker (429)', e);
    if (loginVar && (status === 403 || status === 400))
      return new ProviderError('vault', 'misconfigured', `Vault refused the broker's login (${status}${msg ? `: ${msg}` : ''}): check ${loginVar}`, e);
    if (status === 403)
      return new ProviderError('vault', 'refused', `Vault denied the broker ${op} (403 permission denied): the broker's Vault policy must allow it`, e);
    if (status === 404) return new ProviderError('vault', 'not_found', `Vault has nothing at ${op} (404): check the mount and role named by the policy`, e);
    if (status === 400) return new ProviderError('vault', 'refused', `Vault rejected ${op} (400${msg ? `: ${msg}` : ''})`, e);
    return new ProviderError('vault', 'bad_answer', `Vault failed ${op} (${status}${msg ? `: ${msg}` : ''})`, e);
  }
  const net = networkErrorKind(e);
  if (net === 'timeout') return new ProviderError('vault', 'timeout', `Vault did not answer ${op} within ${timeoutMs} ms`, e);
  if (net === 'down') return new ProviderError('vault', 'down', `Vault is unreachable (${(e as { code?: string }).code ?? 'connection failed'})`, e);
  return new ProviderError('vault', 'bad_answer', `Vault call ${op} failed: ${backendText((e as Error)?.message)}`, e);
}
