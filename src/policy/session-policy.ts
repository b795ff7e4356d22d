/**
 * The session policy Cordon sends with every STS AssumeRole: the credential's `session_policy`
 * (or, without one, Allow-all) with `DateLessThan aws:CurrentTime <the token's exp>` added to
 * each Allow statement. A session's permissions are the intersection of the role's policies and
 * its session policy, evaluated on every request, so the keys can do nothing once the token is
 * dead although STS issues them for at least 900 s. Deny statements are left as they are.
 *
 * The date is a literal (IAM allows no policy variable with Date operators), to the second, and
 * always 20 characters, so lint can measure the policy as sent with any date.
 */

/** What lint measures with: any date gives the same length. */
export const SIZE_PROBE_MS = 0;

export class SessionPolicyError extends Error {}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `YYYY-MM-DDTHH:MM:SSZ`, rounded down to the second. */
export const isoSecond = (ms: number): string => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;
const EPOCH = /^\d{1,12}$/;

/** The latest of a DateLessThan's values (several values are OR-ed), or an error naming the statement. */
function latestOf(raw: unknown, where: string): number {
  const values = Array.isArray(raw) ? raw : [raw];
  if (!values.length) throw new SessionPolicyError(`${where}: DateLessThan aws:CurrentTime has no value`);
  return Math.max(
    ...values.map((v) => {
      const s = typeof v === 'number' && Number.isInteger(v) ? String(v) : v;
      const ms = typeof s !== 'string' ? NaN : EPOCH.test(s) ? Number(s) * 1000 : ISO_DATE.test(s) ? Date.parse(s) : NaN;
      if (!Number.isFinite(ms) || ms < 0 || ms >= Date.UTC(10000, 0))
        throw new SessionPolicyError(`${where}: DateLessThan aws:CurrentTime must be an ISO 8601 date or epoch seconds, not ${JSON.stringify(v)}`);
      return ms;
    }),
  );
}

/** One statement with the bound added, if it is an Allow; an earlier DateLessThan aws:CurrentTime of its own is kept. */
function boundStatement(s: unknown, untilMs: number, where: string): unknown {
  if (!isObject(s) || s.Effect !== 'Allow') return s;
  const cond = s.Condition;
  if (cond !== undefined && !isObject(cond)) throw new SessionPolicyError(`${where}: Condition must be an object`);
  const dlt = cond?.DateLessThan;
  if (dlt !== undefined && !isObject(dlt)) throw new SessionPolicyError(`${where}: Condition.DateLessThan must be an object`);
  // Condition key names are case-insensitive in IAM: every spelling of aws:CurrentTime becomes one key.
  let at = untilMs;
  const others: Json = {};
  for (const [k, v] of Object.entries(dlt ?? {})) {
    if (k.toLowerCase() === 'aws:currenttime') at = Math.min(at, latestOf(v, where));
    else others[k] = v;
  }
  return { ...s, Condition: { ...cond, DateLessThan: { ...others, 'aws:CurrentTime': isoSecond(at) } } };
}

/** The session policy as sent: `policy` (or Allow-all) whose every Allow statement ends before `untilMs`. */
export function timeBoundSessionPolicy(policy: Json | undefined, untilMs: number): Json {
  if (!policy)
    return {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: '*', Resource: '*', Condition: { DateLessThan: { 'aws:CurrentTime': isoSecond(untilMs) } } }],
    };
  const st = policy.Statement;
  if (st === undefined) return policy;
  return {
    ...policy,
    Statement: Array.isArray(st) ? st.map((s, i) => boundStatement(s, untilMs, `Statement[${i}]`)) : boundStatement(st, untilMs, 'Statement'),
  };
}
