/**
 * The IAM side of STS revocation: each role carries ONE inline policy (`cordon-revocations`)
 * rebuilt in full from the role's active deny entries (the database is the truth; IAM a
 * projection of it), within IAM's inline-policy budget.
 */
import { newId } from '../ids.ts';
import type { DenyRecord } from './provider.ts';

const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The one inline policy per role that holds every active revocation on it. */
export const REVOCATION_POLICY = 'cordon-revocations';
/** IAM's budget for all inline policies of one role together (characters, whitespace not counted). */
export const INLINE_POLICY_LIMIT = 10_240;

/** Entry ids that sort by creation (then a per-process counter), so "oldest first" is stable even within one millisecond. */
let denySeq = 0;
export const denyId = (): string => `iamd_${Date.now().toString(36).padStart(9, '0')}${(denySeq++ % 36 ** 4).toString(36).padStart(4, '0')}_${newId('x').slice(2, 18)}`;

/**
 * The role's revocation policy from its active entries, oldest first. Revoked sessions (their
 * source identities, each unique to one session, issued before the latest of their revocation
 * times: the broker issues nothing in a session after revoking it, so the shared bound denies
 * nothing new) share one statement, credentials revoked alone inside live sessions (their
 * aws:userid) another. Entries are taken in order while the document stays within `limit`;
 * the first that does not fit and every later one are `omitted` (older entries never make way
 * for newer).
 */
export function buildRevocationPolicy(entries: readonly DenyRecord[], skewMs: number, limit = INLINE_POLICY_LIMIT): { document: string | null; applied: string[]; omitted: string[] } {
  const sources: string[] = [];
  const users: string[] = [];
  let latest = -Infinity;
  const render = (si: string[], at: number, uid: string[]): string => {
    const Statement: object[] = [];
    // Rounded up to the second: IAM compares whole seconds, and nothing of these sessions is issued later.
    if (si.length) Statement.push({ Sid: 'CordonRevokedSessions', Effect: 'Deny', Action: '*', Resource: '*', Condition: { StringEquals: { 'aws:SourceIdentity': si }, DateLessThan: { 'aws:TokenIssueTime': iso(Math.ceil((at + skewMs) / 1000) * 1000) } } });
    if (uid.length) Statement.push({ Sid: 'CordonRevokedCredentials', Effect: 'Deny', Action: '*', Resource: '*', Condition: { StringLike: { 'aws:userid': uid } } });
    return JSON.stringify({ Version: '2012-10-17', Statement });
  };
  let document: string | null = null;
  const applied: string[] = [];
  const omitted: string[] = [];
  for (const e of entries) {
    if (omitted.length) {
      omitted.push(e.id);
      continue;
    }
    const si = e.kind === 'session' && !sources.includes(e.subject) ? [...sources, e.subject] : sources;
    const uid = e.kind === 'credential' && !users.includes(e.subject) ? [...users, e.subject] : users;
    const at = e.kind === 'session' ? Math.max(latest, e.revokedAt) : latest;
    const doc = render(si, at, uid);
    if (doc.length > limit) {
      omitted.push(e.id);
      continue;
    }
    if (si !== sources) sources.push(e.subject);
    if (uid !== users) users.push(e.subject);
    latest = at;
    document = doc;
    applied.push(e.id);
  }
  return { document: sources.length || users.length ? document : null, applied, omitted };
}
