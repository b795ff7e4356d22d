import type { Request } from 'express';
import { CordonError } from '../errors.ts';

export type Form = Map<string, string[]>;

const decode = (s: string): string => {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    throw new CordonError('invalid_request', 'request body is not valid percent-encoded UTF-8', { reason: 'body_not_utf8' });
  }
};

/** No endpoint takes more than a dozen parameters; a body of thousands is an attack on the parser. */
export const MAX_FORM_PARAMS = 100;

/**
 * Strict application/x-www-form-urlencoded: the raw body must be UTF-8 and every escape must
 * decode to UTF-8, so nothing reaches a decision as replacement characters. At most
 * MAX_FORM_PARAMS parameters, parsed in linear time. A request without a body is an empty form.
 */
export function parseForm(req: Request): Form {
  // req.is answers null when there is no body at all, false when the body has another type.
  if (req.is('application/x-www-form-urlencoded') === false)
    throw new CordonError('invalid_request', 'content type must be application/x-www-form-urlencoded', { reason: 'content_type' });
  const raw = req.body;
  if (!Buffer.isBuffer(raw)) return new Map();
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new CordonError('invalid_request', 'request body is not valid UTF-8', { reason: 'body_not_utf8' });
  }
  const form: Form = new Map();
  let count = 0;
  for (const pair of text.split('&')) {
    if (!pair) continue;
    if (++count > MAX_FORM_PARAMS)
      throw new CordonError('invalid_request', `request has more than ${MAX_FORM_PARAMS} parameters`, { reason: 'too_many_params' });
    const i = pair.indexOf('=');
    const k = decode(i === -1 ? pair : pair.slice(0, i));
    const v = decode(i === -1 ? '' : pair.slice(i + 1));
    const values = form.get(k);
    if (values) values.push(v);
    else form.set(k, [v]);
  }
  return form;
}

/** RFC 6749 §3.2: a parameter must not appear more than once. */
export function single(form: Form, name: string): string | undefined {
  const v = form.get(name);
  if (!v) return undefined;
  if (v.length > 1) throw new CordonError('invalid_request', `parameter ${name} must not be repeated`, { reason: 'duplicate_param' });
  return v[0];
}

export function required(form: Form, name: string): string {
  const v = single(form, name);
  if (v === undefined || v === '') throw new CordonError('invalid_request', `parameter ${name} is required`, { reason: 'missing_param' });
  return v;
}
