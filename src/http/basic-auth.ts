import { isWellFormedId } from '../ids.ts';

/**
 * RFC 6749 §2.3.1 Basic credentials: the form-encoded client id and secret, or why they are
 * malformed (not Basic, no colon, a bad escape).
 */
export function basicCredentials(header: string): { id: string; secret: string } | { malformed: string } {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header);
  if (!m) return { malformed: 'authorization header must be Basic' };
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return { malformed: 'malformed Basic credentials' };
  try {
    return { id: decodeURIComponent(decoded.slice(0, i).replace(/\+/g, ' ')), secret: decodeURIComponent(decoded.slice(i + 1).replace(/\+/g, ' ')) };
  } catch {
    return { malformed: 'malformed Basic credentials' };
  }
}

/**
 * The client id a request claims (form `client_id`, or the Basic header's user), for the audit
 * row of a refusal made before or without authentication. Only a well-formed id, never a secret.
 */
export function claimedClientId(authorization: string | undefined, formClientId: unknown): string | null {
  if (isWellFormedId(formClientId)) return formClientId;
  const basic = authorization ? basicCredentials(authorization) : undefined;
  return basic && 'id' in basic && isWellFormedId(basic.id) ? basic.id : null;
}
