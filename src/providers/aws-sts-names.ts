/**
 * Names Cordon gives STS sessions, so CloudTrail and IAM conditions can tell sessions and
 * credentials apart (see aws-sts.ts): within AWS's patterns, never starting with `aws:`.
 */

export const NAME_RE = /^[\w+=,.@-]{2,64}$/;

/** Characters AWS allows in RoleSessionName / SourceIdentity: `[\w+=,.@-]`. */
const nameSafe = (s: string): string => s.replace(/[^\w+=,.@-]/g, '-');
/** Characters AWS allows in tag values: letters, spaces, numbers and `_.:/=+-@`; at most 256. */
export const tagSafe = (s: string): string =>
  Array.from(s.replace(/[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu, '_'))
    .slice(0, 256)
    .join('');
const tail = (id: string, n: number): string => nameSafe(id.replace(/^[a-z]+_/, '')).slice(-n);

/** `<agent id>.<session id>`, within `[\w+=,.@-]{2,64}` and never starting with `aws:`. */
export function sourceIdentityFor(agentId: string, sid: string): string {
  const s = nameSafe(sid.replace(/^ses_/, '')).slice(0, 40);
  const a = nameSafe(agentId).slice(0, 64 - 1 - s.length);
  const si = `${a}.${s}`.slice(0, 64);
  return si.length >= 2 ? si : `${si}--`.slice(0, 2);
}

/** `cordon.<holder>.<session tail>.<credential tail>`, unique per credential, within `[\w+=,.@-]{2,64}`. */
export function roleSessionNameFor(holderName: string, sid: string, credentialId: string): string {
  const suffix = `.${tail(sid, 10)}.${tail(credentialId, 12)}`;
  return `cordon.${nameSafe(holderName).slice(0, 64 - 7 - suffix.length)}${suffix}`;
}
