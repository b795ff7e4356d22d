/**
 * Injection: the upstream's credential goes into the outgoing call as the policy says — a header
 * or a query parameter rendered from a template (`{secret.FIELD}` from the credential's fields,
 * `{token}` for a Vault child token). SigV4 signing is its own step (sigv4.ts).
 */
import { CordonError } from '../errors.ts';
import type { Injection } from '../policy/types.ts';

const PLACEHOLDER = /\{(token|secret\.[A-Za-z0-9_.-]+)\}/g;

/** Renders a template; a field the credential lacks fails the call (502): sending a half-built credential helps nobody. */
export function render(template: string, values: Record<string, unknown>): string {
  return template.replace(PLACEHOLDER, (_, ref: string) => {
    const v = ref === 'token' ? values.client_token : values[ref.slice('secret.'.length)];
    if (typeof v !== 'string' && typeof v !== 'number')
      throw new CordonError('bad_gateway', `the upstream's credential has no ${ref === 'token' ? 'token' : `field ${ref.slice(7)}`} to inject`, {
        reason: 'inject_field_missing',
      });
    const s = String(v);
    // A value with CR/LF would split the header it is put in.
    if (/[\r\n\u0000]/.test(s)) throw new CordonError('bad_gateway', "the upstream's credential holds a line break", { reason: 'inject_bad_value' });
    return s;
  });
}

/** Adds the credential to `headers` (lowercase names) or to `query`, in place. */
export function injectTemplate(
  inj: Exclude<Injection, { aws_sigv4: unknown }>,
  values: Record<string, unknown>,
  headers: Record<string, string>,
  query: URLSearchParams,
): void {
  if ('header' in inj) headers[inj.header.toLowerCase()] = render(inj.value, values);
  else query.set(inj.query, render(inj.value, values));
}
