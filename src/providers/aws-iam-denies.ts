/**
 * The IAM side of STS revocation: each role carries ONE inline policy (`cordon-revocations`)
 * rebuilt in full from the role's active deny entries (the database is the truth; IAM a
 * projection of it), within IAM's inline-policy budget.
 */
import { newId } from '../ids.ts';
import type { DenyApplyResult, DenyRecord, ProviderError, RevokeContext, RevokeResult, RevokeTarget } from './provider.ts';
import { NAME_RE } from './aws-sts-names.ts';

export const roleNameOf = (roleArn: string): string => roleArn.slice(roleArn.lastIndexOf('/') + 1);
const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The one inline policy per role that holds every active revocation on it. */
export const REVOCATION_POLICY = 'cordon-revocations';
/** IAM's budget for all inline policies of one role together (characters, whitespace not counted). */
export const INLINE_POLICY_LIMIT = 10_240;

/** Entry ids that sort by creation (then a per-process counter), so "oldest first" is stable even within one millisecond. */
let denySeq = 0;
export const denyId = (): string =>
  `iamd_${Date.now().toString(36).padStart(9, '0')}${(denySeq++ % 36 ** 4).toString(36).padStart(4, '0')}_${newId('x').slice(2, 18)}`;

/**
 * The role's revocation policy from its active entries, oldest first. Revoked sessions (their
 * source identities, each unique to one session, issued before the latest of their revocation
 * times: the broker issues nothing in a session after revoking it, so the shared bound denies
 * nothing new) share one statement, credentials revoked alone inside live sessions (their
 * aws:userid) another. Entries are taken in order while the document stays within `limit`;
 * the first that does not fit and every later one are `omitted` (older entries never make way
 * for newer).
 */
export function buildRevocationPolicy(
  entries: readonly DenyRecord[],
  skewMs: number,
  limit = INLINE_POLICY_LIMIT,
): { document: string | null; applied: string[]; omitted: string[] } {
  const sources: string[] = [];
  const users: string[] = [];
  let latest = -Infinity;
  const render = (si: string[], at: number, uid: string[]): string => {
    const Statement: object[] = [];
    // Rounded up to the second: IAM compares whole seconds, and nothing of these sessions is issued later.
    if (si.length)
      Statement.push({
        Sid: 'CordonRevokedSessions',
        Effect: 'Deny',
        Action: '*',
        Resource: '*',
        Condition: { StringEquals: { 'aws:SourceIdentity': si }, DateLessThan: { 'aws:TokenIssueTime': iso(Math.ceil((at + skewMs) / 1000) * 1000) } },
      });
    if (uid.length)
      Statement.push({ Sid: 'CordonRevokedCredentials', Effect: 'Deny', Action: '*', Resource: '*', Condition: { StringLike: { 'aws:userid': uid } } });
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

/**
 * Deny entries for these groups (a revoked session: its source identity; otherwise each named
 * credential: its aws:userid), recorded first, then each role's one policy rebuilt from every
 * active entry in the database and put in full.
 */
export async function denyGroups(
  groups: RevokeTarget[][],
  ctx: RevokeContext,
  o: {
    skewMs: number;
    apply: (roleArn: string, entries: DenyRecord[]) => Promise<DenyApplyResult>;
    mapError: (op: string, e: unknown, roleArn: string) => ProviderError;
  },
): Promise<RevokeResult[]> {
  const results: RevokeResult[] = [];
  const skew = o.skewMs;
  const entries: DenyRecord[] = [];
  const planned: Array<{ t: RevokeTarget; entry: DenyRecord }> = [];
  const entry = (t: RevokeTarget, kind: DenyRecord['kind'], subject: string, removeAfter: number): DenyRecord => ({
    id: denyId(),
    roleArn: String(t.handle!.role_arn),
    policyName: REVOCATION_POLICY,
    sid: t.sid,
    kind,
    subject,
    revokedAt: ctx.now,
    removeAfter,
  });
  for (const group of groups) {
    if (ctx.scope === 'session') {
      // The whole session: its source identity, issued before now (the broker issues nothing in a session after revoking it).
      const e = entry(group[0], 'session', String(group[0].handle!.source_identity), Math.max(...group.map((t) => t.expiresAt)) + skew);
      entries.push(e);
      for (const t of group) planned.push({ t, entry: e });
    } else {
      // Only some credentials of a live session: name each (aws:userid = <role id>:<role session name>).
      for (const t of group) {
        const rsn = t.handle!.role_session_name;
        if (typeof rsn !== 'string' || !NAME_RE.test(rsn)) {
          results.push({
            id: t.id,
            outcome: 'failed',
            kind: 'bad_answer',
            note: 'no role session name was recorded for this STS credential, so IAM cannot deny it alone',
          });
          continue;
        }
        const e = entry(t, 'credential', `AROA*:${rsn}`, t.expiresAt + skew);
        entries.push(e);
        planned.push({ t, entry: e });
      }
    }
  }
  if (!entries.length) return results;
  try {
    await ctx.recordDeny(entries);
  } catch (e) {
    const note = `the IAM deny could not be recorded, so none was put: ${(e as Error).message}`;
    return [...results, ...planned.map(({ t }) => ({ id: t.id, outcome: 'failed' as const, note }))];
  }
  for (const roleArn of new Set(entries.map((e) => e.roleArn))) {
    const roleName = roleNameOf(roleArn);
    const mine = planned.filter((p) => p.entry.roleArn === roleArn);
    let res: DenyApplyResult;
    try {
      res = await ctx.syncDenies(roleArn, [...new Set(mine.map((p) => p.entry.id))], (all) => o.apply(roleArn, all));
    } catch (e) {
      const err = o.mapError('PutRolePolicy', e, roleArn);
      results.push(
        ...mine.map(({ t }) => ({
          id: t.id,
          outcome: 'failed' as const,
          kind: err.kind,
          note: `IAM deny could not be put on role ${roleName}: ${err.description}`,
        })),
      );
      continue;
    }
    const applied = new Set(res.applied);
    const omitted = new Set(res.omitted);
    for (const { t, entry: e } of mine) {
      const what = e.kind === 'session' ? `aws:SourceIdentity ${e.subject}` : `aws:userid ${e.subject}`;
      if (applied.has(e.id)) {
        results.push({
          id: t.id,
          outcome: 'revoked',
          note: `denied by inline policy ${REVOCATION_POLICY} on role ${roleName} (${what}); removed after ${iso(e.removeAfter)}`,
          deny: e,
        });
      } else if (omitted.has(e.id)) {
        results.push({
          id: t.id,
          outcome: 'failed',
          kind: 'refused',
          note: `IAM deny does not fit on role ${roleName}: inline policy ${REVOCATION_POLICY} is full (${res.applied.length} active revocations; IAM allows ${INLINE_POLICY_LIMIT} characters of inline policy per role), so ${what} is not denied; retried until it fits or the credential expires at ${iso(t.expiresAt)}`,
        });
      } else {
        results.push({
          id: t.id,
          outcome: 'failed',
          kind: 'bad_answer',
          note: `IAM deny for ${what} was not in the policy rebuilt for role ${roleName}; retrying`,
        });
      }
    }
  }
  return results;
}
