/**
 * StsDouble — one small HTTP server that speaks the AWS Query protocol for
 * STS (`Version=2011-06-15`: AssumeRole, GetCallerIdentity) and the IAM inline
 * role policy calls (`Version=2010-05-08`: PutRolePolicy, GetRolePolicy,
 * DeleteRolePolicy, ListRolePolicies). Point both `STSClient` and `IAMClient`
 * at `url` (the SDK's `endpoint` option).
 *
 * It checks what AWS checks:
 * - every request is SigV4-signed (AWS4-HMAC-SHA256) with a known access key,
 *   scoped to the configured region and the right service (`sts` or `iam`),
 *   with `host` and `x-amz-date` signed and the date within 15 minutes of the
 *   real clock; unknown key → 403 InvalidClientTokenId, wrong signature → 403
 *   SignatureDoesNotMatch. Credentials it issued can sign requests too (with
 *   `x-amz-security-token`), which is role chaining (capped at 1 h).
 * - AssumeRole parameter limits: DurationSeconds 900–43200 and ≤ the role's
 *   MaxSessionDuration (default 3600); RoleSessionName and SourceIdentity
 *   `[\w+=,.@-]{2,64}` (SourceIdentity not `aws:`…); Policy ≤ 2048 chars of
 *   `[\u0009\u000A\u000D\u0020-\u00FF]`, valid policy JSON; ≤ 50 session tags
 *   (key ≤ 128, value ≤ 256, `[\p{L}\p{Z}\p{N}_.:/=+\-@]`, keys unique
 *   case-insensitively); ≤ 10 PolicyArns; transitive keys ⊆ tag keys; a packed
 *   size estimate (deflated policy + ARNs + tags, against
 *   `packedPolicyLimitBytes`) → PackedPolicyTooLarge; unknown role, caller not
 *   allowed, or ExternalId mismatch → 403 AccessDenied.
 * - answers in AWS's XML, errors as `<ErrorResponse>` with 400/403/404/409.
 *
 * It remembers every credential it issued; `isCredentialDenied()` evaluates the
 * role's inline policies (and the session policy) the way IAM would for Deny
 * statements, so a test can prove that a "revoke older sessions" policy
 * (`DateLessThan aws:TokenIssueTime`) or a deny on `aws:SourceIdentity` /
 * `aws:PrincipalTag/…` really cuts a session off; and a session policy grants
 * only what one of its Allow statements allows, conditions included, so a
 * `DateLessThan aws:CurrentTime` time bound ends the keys on the double's clock.
 *
 * Time: credential issue/expiry use `now()`; signature freshness uses the real
 * clock (the SDK signs with the real clock), and the `Date` response header is
 * real so the SDK's clock-skew correction never kicks in.
 */
import type http from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { HttpDouble, type NowSource, type RecordedRequestBase, randUpper } from './http-double.ts';
import { SigV4VerifyError, awsTime, parseAuthorization, uriEscape, verifySignature } from './sigv4-verify.ts';

// ---------------------------------------------------------------- public types

export interface StsDoubleOptions {
  region?: string;
  accountId?: string;
  /** The long-term test key the SDK signs with. Default 'AKIDTEST' / 'test-secret'. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Identity of that key. Default `arn:aws:iam::<account>:user/cordon-broker`. */
  callerArn?: string;
  /** Packed-policy budget in bytes for the estimate (default 2048). */
  packedPolicyLimitBytes?: number;
  /** Allowed difference between x-amz-date and the real clock (default 15 min, as AWS). */
  maxClockSkewMs?: number;
  now?: NowSource;
}

export interface StsRoleConfig {
  /** Role's MaxSessionDuration in seconds (3600–43200; default 3600). */
  maxSessionDuration?: number;
  /** Trust policy condition sts:ExternalId. */
  externalId?: string;
  /** Access key ids or principal ARNs allowed to assume the role (default: every configured long-term key). */
  allowedCallers?: string[];
}

export interface IssuedCredential {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  roleArn: string;
  roleName: string;
  /** `AROA…` */
  roleId: string;
  sessionName: string;
  /** `arn:aws:sts::<account>:assumed-role/<role>/<session>` */
  assumedRoleArn: string;
  /** `AROA…:<session>` (the aws:userid of the session) */
  assumedRoleId: string;
  sourceIdentity?: string;
  tags: Record<string, string>;
  transitiveTagKeys: string[];
  /** Session policy JSON as sent. */
  policy?: string;
  policyArns: string[];
  externalId?: string;
  durationSeconds: number;
  issuedAtMs: number;
  expiresAtMs: number;
  /** Access key id that called AssumeRole. */
  callerAccessKeyId: string;
  packedPolicySize?: number;
}

/** AssumeRole parameters as a structure (what the broker sent). */
export interface AssumeRoleParams {
  RoleArn?: string;
  RoleSessionName?: string;
  DurationSeconds?: number;
  Policy?: string;
  SourceIdentity?: string;
  ExternalId?: string;
  Tags: Array<{ Key: string; Value: string }>;
  TransitiveTagKeys: string[];
  PolicyArns: string[];
}

export interface StsRecordedRequest extends RecordedRequestBase {
  /** Query API parameters (form body merged over the query string). */
  params: Record<string, string>;
  /** Same object as `params`. */
  body: Record<string, string>;
  action?: string;
  version?: string;
  /** Access key id from the Authorization header, if any. */
  accessKeyId?: string;
  /** Error code answered, if the request failed. */
  errorCode?: string;
}

export interface DenyCheckOptions {
  /** Evaluation time (aws:CurrentTime); default now(). */
  atMs?: number;
  /** Action to test (e.g. 's3:GetObject'); by default only statements denying '*' count. */
  action?: string;
  /** Resource ARN to test; by default only statements on '*' count. */
  resource?: string;
}

// ---------------------------------------------------------------- internals

const STS_NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const IAM_NS = 'https://iam.amazonaws.com/doc/2010-05-08/';
const STS_VERSION = '2011-06-15';
const IAM_VERSION = '2010-05-08';
const STS_ACTIONS = new Set(['AssumeRole', 'GetCallerIdentity']);
const IAM_ACTIONS = new Set(['PutRolePolicy', 'GetRolePolicy', 'DeleteRolePolicy', 'ListRolePolicies']);

class AwsError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
const validationError = (msg: string): AwsError => new AwsError(400, 'ValidationError', msg);

interface Role {
  arn: string;
  name: string;
  id: string;
  cfg: StsRoleConfig;
  inline: Map<string, string>;
}
interface LongTermKey {
  secret: string;
  arn: string;
  userId: string;
}
interface Injected {
  status: number;
  code: string;
  message: string;
  action?: string;
}

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');

const NAME_RE = /^[\w+=,.@-]*$/;
const POLICY_CHARS_RE = /^[\u0009\u000A\u000D\u0020-\u00FF]*$/;
const TAG_KEY_RE = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$/u;
const TAG_VALUE_RE = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
const EXTERNAL_ID_RE = /^[\w+=,.@:/-]*$/;
const ROLE_ARN_RE = /^arn:aws[\w-]*:iam::(\d{12}):role\/(?:[\w+=,.@/-]*\/)?([\w+=,.@-]{1,64})$/;

/** Collects AWS-style constraint failures: "N validation errors detected: Value 'x' at 'member' failed to satisfy constraint: Member must …". */
class Constraints {
  readonly errors: string[] = [];
  check(ok: boolean, value: string | number | undefined, member: string, constraint: string): void {
    if (ok) return;
    const v = value === undefined ? 'null' : `'${String(value)}'`;
    this.errors.push(`Value ${v} at '${member}' failed to satisfy constraint: Member must ${constraint}`);
  }
  throwIfAny(): void {
    const n = this.errors.length;
    if (n) throw validationError(`${n} validation error${n > 1 ? 's' : ''} detected: ${this.errors.join('; ')}`);
  }
}

/** Parse `Prefix.member.N[.Field]` lists of the Query protocol. */
function memberList(params: Record<string, string>, prefix: string, field?: string): string[] {
  const re = new RegExp(`^${prefix}\\.member\\.(\\d+)${field ? `\\.${field}` : ''}$`);
  return Object.entries(params)
    .map(([k, v]) => [re.exec(k)?.[1], v] as const)
    .filter((e): e is readonly [string, string] => e[0] !== undefined)
    .sort((a, b) => Number(a[0]) - Number(b[0]))
    .map(([, v]) => v);
}

export function parseAssumeRoleParams(params: Record<string, string>): AssumeRoleParams {
  const keys = memberList(params, 'Tags', 'Key');
  const values = memberList(params, 'Tags', 'Value');
  return {
    RoleArn: params.RoleArn,
    RoleSessionName: params.RoleSessionName,
    DurationSeconds: params.DurationSeconds === undefined ? undefined : Number(params.DurationSeconds),
    Policy: params.Policy,
    SourceIdentity: params.SourceIdentity,
    ExternalId: params.ExternalId,
    Tags: keys.map((Key, i) => ({ Key, Value: values[i] ?? '' })),
    TransitiveTagKeys: memberList(params, 'TransitiveTagKeys'),
    PolicyArns: memberList(params, 'PolicyArns', 'arn'),
  };
}

type Statement = {
  Sid?: string;
  Effect?: string;
  Action?: string | string[];
  NotAction?: string | string[];
  Resource?: string | string[];
  NotResource?: string | string[];
  Principal?: unknown;
  NotPrincipal?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
};

/** IAM identity-policy grammar checks; returns an error message or undefined. */
function policyProblem(doc: string): string | undefined {
  let p: unknown;
  try {
    p = JSON.parse(doc);
  } catch {
    return 'Syntax errors in policy.';
  }
  if (typeof p !== 'object' || p === null || Array.isArray(p)) return 'Syntax errors in policy.';
  const o = p as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['Version', 'Id', 'Statement'].includes(k)) return 'Syntax errors in policy.';
  if (o.Version === undefined) return 'Policy document must specify a Version.';
  if (o.Version !== '2012-10-17' && o.Version !== '2008-10-17') return 'The policy failed legacy parsing';
  const stmts = Array.isArray(o.Statement) ? o.Statement : o.Statement === undefined ? undefined : [o.Statement];
  if (!stmts || stmts.length === 0) return 'Syntax errors in policy.';
  for (const s of stmts as Statement[]) {
    if (typeof s !== 'object' || s === null || Array.isArray(s)) return 'Syntax errors in policy.';
    const allowed = ['Sid', 'Effect', 'Action', 'NotAction', 'Resource', 'NotResource', 'Condition', 'Principal', 'NotPrincipal'];
    if (Object.keys(s).some((k) => !allowed.includes(k))) return 'Syntax errors in policy.';
    if (s.Effect !== 'Allow' && s.Effect !== 'Deny') return 'Syntax errors in policy.';
    if (s.Principal !== undefined || s.NotPrincipal !== undefined) return 'Policy document should not specify a principal.';
    if (s.Action === undefined && s.NotAction === undefined) return 'Policy statement must contain actions.';
    if (s.Resource === undefined && s.NotResource === undefined) return 'Policy statement must contain resources.';
    if (s.Condition !== undefined && (typeof s.Condition !== 'object' || s.Condition === null)) return 'Syntax errors in policy.';
  }
  return undefined;
}

const asList = (x: unknown): string[] => (x === undefined ? [] : Array.isArray(x) ? x.map(String) : [String(x)]);
const wildcard = (pattern: string, ci: boolean): RegExp =>
  new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    ci ? 'i' : '',
  );
const toTime = (s: string): number => (/^\d+$/.test(s) ? Number(s) * 1000 : Date.parse(s));

/** Does one IAM condition block hold for the request context? (Supports the String*, Date*, Numeric*, Bool, Null, Arn* operators.) */
function conditionHolds(cond: Record<string, Record<string, unknown>>, ctx: (key: string) => string | undefined): boolean {
  for (const [rawOp, block] of Object.entries(cond)) {
    let op = rawOp.replace(/^For(Any|All)Value:/, '');
    const ifExists = op.endsWith('IfExists');
    if (ifExists) op = op.slice(0, -'IfExists'.length);
    for (const [key, raw] of Object.entries(block)) {
      const want = asList(raw);
      const have = ctx(key);
      let ok: boolean;
      if (op === 'Null') ok = want.includes(have === undefined ? 'true' : 'false');
      else if (have === undefined) ok = ifExists || /Not/.test(op);
      else
        switch (op) {
          case 'StringEquals':
          case 'ArnEquals':
            ok = want.includes(have);
            break;
          case 'StringNotEquals':
          case 'ArnNotEquals':
            ok = !want.includes(have);
            break;
          case 'StringEqualsIgnoreCase':
            ok = want.some((w) => w.toLowerCase() === have.toLowerCase());
            break;
          case 'StringNotEqualsIgnoreCase':
            ok = !want.some((w) => w.toLowerCase() === have.toLowerCase());
            break;
          case 'StringLike':
          case 'ArnLike':
            ok = want.some((w) => wildcard(w, false).test(have));
            break;
          case 'StringNotLike':
          case 'ArnNotLike':
            ok = !want.some((w) => wildcard(w, false).test(have));
            break;
          case 'DateEquals':
            ok = want.some((w) => toTime(have) === toTime(w));
            break;
          case 'DateNotEquals':
            ok = !want.some((w) => toTime(have) === toTime(w));
            break;
          case 'DateLessThan':
            ok = want.some((w) => toTime(have) < toTime(w));
            break;
          case 'DateLessThanEquals':
            ok = want.some((w) => toTime(have) <= toTime(w));
            break;
          case 'DateGreaterThan':
            ok = want.some((w) => toTime(have) > toTime(w));
            break;
          case 'DateGreaterThanEquals':
            ok = want.some((w) => toTime(have) >= toTime(w));
            break;
          case 'NumericEquals':
            ok = want.some((w) => Number(have) === Number(w));
            break;
          case 'NumericLessThan':
            ok = want.some((w) => Number(have) < Number(w));
            break;
          case 'NumericGreaterThan':
            ok = want.some((w) => Number(have) > Number(w));
            break;
          case 'Bool':
            ok = want.map((w) => w.toLowerCase()).includes(have.toLowerCase());
            break;
          default:
            throw new Error(`StsDouble: condition operator ${rawOp} is not supported by isCredentialDenied`);
        }
      if (!ok) return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------- the double

export class StsDouble extends HttpDouble<StsRecordedRequest> {
  readonly region: string;
  readonly accountId: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  packedPolicyLimitBytes: number;
  maxClockSkewMs: number;
  /** Every credential issued by AssumeRole, by access key id. */
  readonly issued = new Map<string, IssuedCredential>();

  #keys = new Map<string, LongTermKey>();
  #roles = new Map<string, Role>(); // by ARN
  #failures: Injected[] = [];

  constructor(opts: StsDoubleOptions = {}) {
    super(opts.now);
    this.region = opts.region ?? 'us-east-1';
    this.accountId = opts.accountId ?? '123456789012';
    this.accessKeyId = opts.accessKeyId ?? 'AKIDTEST';
    this.secretAccessKey = opts.secretAccessKey ?? 'test-secret';
    this.packedPolicyLimitBytes = opts.packedPolicyLimitBytes ?? 2048;
    this.maxClockSkewMs = opts.maxClockSkewMs ?? 15 * 60_000;
    this.addAccessKey(this.accessKeyId, this.secretAccessKey, opts.callerArn ?? `arn:aws:iam::${this.accountId}:user/cordon-broker`);
  }

  // ------------------------------------------------------------ configuration

  /** Another long-term key the double accepts. */
  addAccessKey(accessKeyId: string, secretAccessKey: string, arn = `arn:aws:iam::${this.accountId}:user/${accessKeyId}`): void {
    this.#keys.set(accessKeyId, { secret: secretAccessKey, arn, userId: `AIDA${randUpper(17)}` });
  }

  /** A role that AssumeRole may target (and whose inline policies IAM calls manage). */
  addRole(arn: string, cfg: StsRoleConfig = {}): void {
    const m = ROLE_ARN_RE.exec(arn);
    if (!m) throw new Error(`StsDouble.addRole: not a role ARN: ${arn}`);
    const max = cfg.maxSessionDuration ?? 3600;
    if (max < 3600 || max > 43200) throw new Error('StsDouble.addRole: maxSessionDuration must be 3600–43200');
    this.#roles.set(arn, { arn, name: m[2], id: `AROA${randUpper(17)}`, cfg, inline: this.#roleByName(m[2])?.inline ?? new Map() });
  }

  /** Make the next request (optionally only of one Action) fail with this AWS error. */
  failNext(status: number, code = 'InternalFailure', message = 'An internal error occurred.', action?: string): void {
    this.#failures.push({ status, code, message, action });
  }

  override reset(): void {
    super.reset();
    this.#failures = [];
  }

  /** Forget issued credentials and inline policies (roles and keys stay). */
  clearState(): void {
    this.issued.clear();
    for (const r of this.#roles.values()) r.inline.clear();
  }

  /** Seed an inline role policy without going through IAM. */
  putRolePolicy(roleName: string, policyName: string, document: string | object): void {
    const role = this.#roleByName(roleName);
    if (!role) throw new Error(`StsDouble: no role named ${roleName}`);
    role.inline.set(policyName, typeof document === 'string' ? document : JSON.stringify(document));
  }

  // ------------------------------------------------------------ inspection helpers

  getCredential(accessKeyId: string): IssuedCredential | undefined {
    return this.issued.get(accessKeyId);
  }

  /** Inline policies of a role (name → JSON document). */
  rolePolicies(roleName: string): Record<string, string> {
    return Object.fromEntries(this.#roleByName(roleName)?.inline ?? []);
  }

  /** Recorded AssumeRole requests, parameters parsed. */
  assumeRoleRequests(): AssumeRoleParams[] {
    return this.requests.filter((r) => r.action === 'AssumeRole').map((r) => parseAssumeRoleParams(r.params));
  }

  isCredentialExpired(accessKeyId: string, atMs = this.now()): boolean {
    const c = this.#cred(accessKeyId);
    return c.expiresAtMs <= atMs;
  }

  /**
   * Would IAM deny this session? Evaluates the Deny statements of the role's inline
   * policies and of the session policy, and whether the session policy (if any) has an
   * Allow statement for the request (with no action or resource asked, any will do: the
   * question is then whether the keys can do anything at all), against the session's context keys:
   * aws:SourceIdentity, aws:TokenIssueTime, aws:PrincipalTag/<key>, aws:userid,
   * aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalType, aws:CurrentTime,
   * aws:EpochTime. Missing keys behave as in IAM (the condition fails, except
   * for negated operators, …IfExists and Null).
   */
  isCredentialDenied(accessKeyId: string, opts: DenyCheckOptions = {}): boolean {
    const c = this.#cred(accessKeyId);
    const at = opts.atMs ?? this.now();
    const role = this.#roles.get(c.roleArn);
    const docs = [...(role?.inline.values() ?? []), ...(c.policy ? [c.policy] : [])];
    const ctx = (key: string): string | undefined => {
      const k = key.toLowerCase();
      if (k.startsWith('aws:principaltag/')) {
        const tag = k.slice('aws:principaltag/'.length);
        return Object.entries(c.tags).find(([t]) => t.toLowerCase() === tag)?.[1];
      }
      switch (k) {
        case 'aws:sourceidentity':
          return c.sourceIdentity;
        case 'aws:tokenissuetime':
          return awsTime(c.issuedAtMs);
        case 'aws:userid':
          return c.assumedRoleId;
        case 'aws:principalarn':
          return c.roleArn;
        case 'aws:principalaccount':
          return this.accountId;
        case 'aws:principaltype':
          return 'AssumedRole';
        case 'aws:currenttime':
          return new Date(at).toISOString();
        case 'aws:epochtime':
          return String(Math.floor(at / 1000));
        default:
          return undefined;
      }
    };
    for (const doc of docs) {
      const parsed = JSON.parse(doc) as { Statement: Statement | Statement[] };
      const stmts = Array.isArray(parsed.Statement) ? parsed.Statement : [parsed.Statement];
      for (const s of stmts) {
        if (s.Effect !== 'Deny') continue;
        if (!matchesItem(s.Action, s.NotAction, opts.action, true)) continue;
        if (!matchesItem(s.Resource, s.NotResource, opts.resource, false)) continue;
        if (s.Condition && !conditionHolds(s.Condition, ctx)) continue;
        return true;
      }
    }
    // The session's permissions are the intersection with its session policy: nothing it does not allow.
    if (c.policy !== undefined) {
      const parsed = JSON.parse(c.policy) as { Statement: Statement | Statement[] };
      const stmts = Array.isArray(parsed.Statement) ? parsed.Statement : [parsed.Statement];
      const allowed = stmts.some(
        (s) =>
          s.Effect === 'Allow' &&
          (opts.action === undefined || matchesItem(s.Action, s.NotAction, opts.action, true)) &&
          (opts.resource === undefined || matchesItem(s.Resource, s.NotResource, opts.resource, false)) &&
          (!s.Condition || conditionHolds(s.Condition, ctx)),
      );
      if (!allowed) return true;
    }
    return false;
  }

  /** Neither expired nor denied. */
  isCredentialUsable(accessKeyId: string, opts: DenyCheckOptions = {}): boolean {
    return !this.isCredentialExpired(accessKeyId, opts.atMs) && !this.isCredentialDenied(accessKeyId, opts);
  }

  #cred(accessKeyId: string): IssuedCredential {
    const c = this.issued.get(accessKeyId);
    if (!c) throw new Error(`StsDouble: no credential was issued with access key id ${accessKeyId}`);
    return c;
  }

  #roleByName(name: string): Role | undefined {
    for (const r of this.#roles.values()) if (r.name === name) return r;
    return undefined;
  }

  // ------------------------------------------------------------ HTTP

  protected record(base: RecordedRequestBase, req: http.IncomingMessage): StsRecordedRequest {
    const params: Record<string, string> = { ...base.query };
    const ctype = String(req.headers['content-type'] ?? '');
    if (base.rawBody && (ctype.startsWith('application/x-www-form-urlencoded') || ctype === '')) {
      for (const [k, v] of new URLSearchParams(base.rawBody)) params[k] = v;
    }
    const cred = /Credential=([^/,\s]+)\//.exec(String(req.headers.authorization ?? ''))?.[1];
    return { ...base, params, body: params, action: params.Action, version: params.Version, accessKeyId: cred };
  }

  protected async handle(rec: StsRecordedRequest, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const requestId = randomUUID();
    const isIam = rec.action !== undefined && IAM_ACTIONS.has(rec.action);
    const ns = isIam ? IAM_NS : STS_NS;
    const send = (status: number, xml: string): void => {
      res
        .writeHead(status, {
          'content-type': 'text/xml',
          'x-amzn-requestid': requestId,
          date: new Date().toUTCString(),
          'content-length': Buffer.byteLength(xml),
        })
        .end(xml);
    };
    try {
      const injected = this.#takeFailure(rec.action);
      if (injected) throw new AwsError(injected.status, injected.code, injected.message);
      const caller = this.#authenticate(rec, req, isIam ? 'iam' : 'sts');
      const result = this.#dispatch(rec, caller);
      send(
        200,
        `<${rec.action}Response xmlns="${ns}">\n${result}<ResponseMetadata>\n<RequestId>${requestId}</RequestId>\n</ResponseMetadata>\n</${rec.action}Response>\n`,
      );
    } catch (err) {
      const e = err instanceof AwsError ? err : new AwsError(500, 'InternalFailure', err instanceof Error ? err.message : String(err));
      rec.errorCode = e.code;
      send(
        e.status,
        `<ErrorResponse xmlns="${ns}">\n<Error>\n<Type>${e.status >= 500 ? 'Receiver' : 'Sender'}</Type>\n<Code>${xmlEscape(e.code)}</Code>\n<Message>${xmlEscape(e.message)}</Message>\n</Error>\n<RequestId>${requestId}</RequestId>\n</ErrorResponse>\n`,
      );
    }
  }

  #takeFailure(action: string | undefined): Injected | undefined {
    const i = this.#failures.findIndex((f) => f.action === undefined || f.action === action);
    return i < 0 ? undefined : this.#failures.splice(i, 1)[0];
  }

  /** SigV4 verification (the shared independent verifier). Returns the caller: a long-term key or an issued session. */
  #authenticate(
    rec: StsRecordedRequest,
    req: http.IncomingMessage,
    service: 'sts' | 'iam',
  ): { accessKeyId: string; arn: string; userId: string; session?: IssuedCredential } {
    try {
      const auth = parseAuthorization(req.headers.authorization);
      const keyId = auth.accessKeyId;
      // Who is signing?
      let secret: string;
      let caller: { accessKeyId: string; arn: string; userId: string; session?: IssuedCredential };
      const lt = this.#keys.get(keyId);
      const session = this.issued.get(keyId);
      if (lt) {
        secret = lt.secret;
        caller = { accessKeyId: keyId, arn: lt.arn, userId: lt.userId };
      } else if (session) {
        if (req.headers['x-amz-security-token'] !== session.sessionToken)
          throw new AwsError(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
        if (session.expiresAtMs <= this.now()) throw new AwsError(403, 'ExpiredToken', 'The security token included in the request is expired');
        secret = session.secretAccessKey;
        caller = { accessKeyId: keyId, arn: session.assumedRoleArn, userId: session.assumedRoleId, session };
      } else throw new AwsError(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
      if (auth.region !== this.region && !(service === 'iam' && auth.region === 'us-east-1'))
        throw new AwsError(403, 'SignatureDoesNotMatch', `Credential should be scoped to a valid region. `);
      if (auth.service !== service) throw new AwsError(403, 'SignatureDoesNotMatch', `Credential should be scoped to correct service: '${service}'. `);
      verifySignature(
        auth,
        { method: rec.method, url: req.url ?? '/', headers: req.headers, body: rec.bodyBytes },
        { secret, now: Date.now(), maxClockSkewMs: this.maxClockSkewMs },
      );
      return caller;
    } catch (e) {
      throw e instanceof SigV4VerifyError ? new AwsError(e.status, e.code, e.message) : e;
    }
  }

  #dispatch(rec: StsRecordedRequest, caller: { accessKeyId: string; arn: string; userId: string; session?: IssuedCredential }): string {
    const action = rec.action ?? '';
    const p = rec.params;
    if (STS_ACTIONS.has(action) && p.Version === STS_VERSION) {
      if (action === 'GetCallerIdentity')
        return `<GetCallerIdentityResult>\n<Arn>${xmlEscape(caller.arn)}</Arn>\n<UserId>${xmlEscape(caller.userId)}</UserId>\n<Account>${this.accountId}</Account>\n</GetCallerIdentityResult>\n`;
      return this.#assumeRole(p, caller);
    }
    if (IAM_ACTIONS.has(action) && p.Version === IAM_VERSION) return this.#iam(action, p);
    throw new AwsError(400, 'InvalidAction', `Could not find operation ${action} for version ${p.Version ?? 'NO_VERSION_SPECIFIED'}`);
  }

  // ------------------------------------------------------------ STS AssumeRole

  #assumeRole(p: Record<string, string>, caller: { accessKeyId: string; arn: string; session?: IssuedCredential }): string {
    const a = parseAssumeRoleParams(p);
    const c = new Constraints();

    c.check(a.RoleArn !== undefined, a.RoleArn, 'roleArn', 'not be null');
    if (a.RoleArn !== undefined) c.check(a.RoleArn.length >= 20 && a.RoleArn.length <= 2048, a.RoleArn, 'roleArn', 'have length between 20 and 2048');
    c.check(a.RoleSessionName !== undefined, a.RoleSessionName, 'roleSessionName', 'not be null');
    if (a.RoleSessionName !== undefined) {
      c.check(a.RoleSessionName.length >= 2, a.RoleSessionName, 'roleSessionName', 'have length greater than or equal to 2');
      c.check(a.RoleSessionName.length <= 64, a.RoleSessionName, 'roleSessionName', 'have length less than or equal to 64');
      c.check(NAME_RE.test(a.RoleSessionName), a.RoleSessionName, 'roleSessionName', 'satisfy regular expression pattern: [\\w+=,.@-]*');
    }
    if (p.DurationSeconds !== undefined) {
      const d = a.DurationSeconds!;
      c.check(Number.isInteger(d), p.DurationSeconds, 'durationSeconds', 'be an integer');
      c.check(!(d < 900), p.DurationSeconds, 'durationSeconds', 'have value greater than or equal to 900');
      c.check(!(d > 43200), p.DurationSeconds, 'durationSeconds', 'have value less than or equal to 43200');
    }
    if (a.Policy !== undefined) {
      c.check(a.Policy.length >= 1, a.Policy, 'policy', 'have length greater than or equal to 1');
      c.check(a.Policy.length <= 2048, a.Policy, 'policy', 'have length less than or equal to 2048');
      c.check(POLICY_CHARS_RE.test(a.Policy), a.Policy, 'policy', 'satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+');
    }
    c.check(a.PolicyArns.length <= 10, String(a.PolicyArns.length), 'policyArns', 'have length less than or equal to 10');
    a.PolicyArns.forEach((arn, i) => c.check(arn.length >= 20 && arn.length <= 2048, arn, `policyArns.${i + 1}.member.arn`, 'have length between 20 and 2048'));
    c.check(a.Tags.length <= 50, String(a.Tags.length), 'tags', 'have length less than or equal to 50');
    a.Tags.forEach((t, i) => {
      const at = `tags.${i + 1}.member`;
      c.check(t.Key.length >= 1 && t.Key.length <= 128, t.Key, `${at}.key`, 'have length between 1 and 128');
      c.check(TAG_KEY_RE.test(t.Key), t.Key, `${at}.key`, 'satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+');
      c.check(t.Value.length <= 256, t.Value, `${at}.value`, 'have length less than or equal to 256');
      c.check(TAG_VALUE_RE.test(t.Value), t.Value, `${at}.value`, 'satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*');
    });
    c.check(a.TransitiveTagKeys.length <= 50, String(a.TransitiveTagKeys.length), 'transitiveTagKeys', 'have length less than or equal to 50');
    if (a.SourceIdentity !== undefined) {
      c.check(a.SourceIdentity.length >= 2, a.SourceIdentity, 'sourceIdentity', 'have length greater than or equal to 2');
      c.check(a.SourceIdentity.length <= 64, a.SourceIdentity, 'sourceIdentity', 'have length less than or equal to 64');
      c.check(NAME_RE.test(a.SourceIdentity), a.SourceIdentity, 'sourceIdentity', 'satisfy regular expression pattern: [\\w+=,.@-]*');
    }
    if (a.ExternalId !== undefined) {
      c.check(a.ExternalId.length >= 2 && a.ExternalId.length <= 1224, a.ExternalId, 'externalId', 'have length between 2 and 1224');
      c.check(EXTERNAL_ID_RE.test(a.ExternalId), a.ExternalId, 'externalId', 'satisfy regular expression pattern: [\\w+=,.@:\\/-]*');
    }
    c.throwIfAny();

    // Semantic checks after the constraint pass.
    if (a.SourceIdentity?.toLowerCase().startsWith('aws:')) throw validationError("The source identity cannot begin with the reserved prefix 'aws:'.");
    const lowerKeys = a.Tags.map((t) => t.Key.toLowerCase());
    if (new Set(lowerKeys).size !== lowerKeys.length) throw validationError('Duplicate tag keys found. Please note that Tag keys are case insensitive.');
    for (const k of a.TransitiveTagKeys)
      if (!lowerKeys.includes(k.toLowerCase())) throw validationError('The specified transitive tag key must be included in the requested tags.');
    if (a.Policy !== undefined) {
      const problem = policyProblem(a.Policy);
      if (problem) throw new AwsError(400, 'MalformedPolicyDocument', problem);
    }

    // Authorization: the role must exist, trust the caller, and match ExternalId.
    const role = this.#roles.get(a.RoleArn!);
    const notAuthorized = (): AwsError =>
      new AwsError(403, 'AccessDenied', `User: ${caller.arn} is not authorized to perform: sts:AssumeRole on resource: ${a.RoleArn}`);
    if (!role) throw notAuthorized();
    const allowed = role.cfg.allowedCallers;
    if (allowed && !allowed.includes(caller.accessKeyId) && !allowed.includes(caller.arn)) throw notAuthorized();
    if (caller.session && this.isCredentialDenied(caller.accessKeyId, { action: 'sts:AssumeRole', resource: role.arn })) throw notAuthorized();
    if (role.cfg.externalId !== undefined && a.ExternalId !== role.cfg.externalId) throw notAuthorized();

    const duration = a.DurationSeconds ?? 3600;
    if (caller.session && duration > 3600)
      throw validationError('The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.');
    if (duration > (role.cfg.maxSessionDuration ?? 3600))
      throw validationError('The requested DurationSeconds exceeds the MaxSessionDuration set for this role.');

    // Session tags: transitive tags of a chained caller come along.
    const tags: Record<string, string> = {};
    const transitive = [...a.TransitiveTagKeys];
    if (caller.session)
      for (const k of caller.session.transitiveTagKeys) {
        const v = caller.session.tags[k];
        if (v !== undefined) {
          tags[k] = v;
          transitive.push(k);
        }
      }
    for (const t of a.Tags) tags[t.Key] = t.Value;

    // Packed size estimate: the compressed policy plus ARNs plus tags, against the budget.
    let packedPolicySize: number | undefined;
    if (a.Policy !== undefined || a.PolicyArns.length || a.Tags.length) {
      const policyBytes = a.Policy ? deflateRawSync(Buffer.from(JSON.stringify(JSON.parse(a.Policy)))).length : 0;
      const arnBytes = a.PolicyArns.reduce((n, s) => n + Buffer.byteLength(s), 0);
      const tagBytes = Object.entries(tags).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v) + 2, 0);
      packedPolicySize = Math.max(1, Math.ceil((100 * (policyBytes + arnBytes + tagBytes)) / this.packedPolicyLimitBytes));
      if (packedPolicySize > 100)
        throw new AwsError(400, 'PackedPolicyTooLarge', `Packed policy consumes ${packedPolicySize}% of allotted space, please use smaller policy.`);
    }

    const now = this.now();
    const cred: IssuedCredential = {
      accessKeyId: `ASIA${randUpper(16)}`,
      secretAccessKey: randomBytes(30).toString('base64'),
      sessionToken: `IQoJb3JpZ2luX2Vj${randomBytes(180).toString('base64')}`,
      roleArn: role.arn,
      roleName: role.name,
      roleId: role.id,
      sessionName: a.RoleSessionName!,
      assumedRoleArn: `arn:aws:sts::${this.accountId}:assumed-role/${role.name}/${a.RoleSessionName}`,
      assumedRoleId: `${role.id}:${a.RoleSessionName}`,
      sourceIdentity: a.SourceIdentity ?? caller.session?.sourceIdentity,
      tags,
      transitiveTagKeys: transitive,
      policy: a.Policy,
      policyArns: a.PolicyArns,
      externalId: a.ExternalId,
      durationSeconds: duration,
      issuedAtMs: now,
      expiresAtMs: now + duration * 1000,
      callerAccessKeyId: caller.accessKeyId,
      packedPolicySize,
    };
    this.issued.set(cred.accessKeyId, cred);
    return (
      `<AssumeRoleResult>\n` +
      (cred.sourceIdentity !== undefined ? `<SourceIdentity>${xmlEscape(cred.sourceIdentity)}</SourceIdentity>\n` : '') +
      `<AssumedRoleUser>\n<Arn>${xmlEscape(cred.assumedRoleArn)}</Arn>\n<AssumedRoleId>${xmlEscape(cred.assumedRoleId)}</AssumedRoleId>\n</AssumedRoleUser>\n` +
      `<Credentials>\n<AccessKeyId>${cred.accessKeyId}</AccessKeyId>\n<SecretAccessKey>${xmlEscape(cred.secretAccessKey)}</SecretAccessKey>\n` +
      `<SessionToken>${xmlEscape(cred.sessionToken)}</SessionToken>\n<Expiration>${awsTime(cred.expiresAtMs)}</Expiration>\n</Credentials>\n` +
      (packedPolicySize !== undefined ? `<PackedPolicySize>${packedPolicySize}</PackedPolicySize>\n` : '') +
      `</AssumeRoleResult>\n`
    );
  }

  // ------------------------------------------------------------ IAM inline role policies

  #iam(action: string, p: Record<string, string>): string {
    const c = new Constraints();
    c.check(p.RoleName !== undefined, p.RoleName, 'roleName', 'not be null');
    if (p.RoleName !== undefined) {
      c.check(p.RoleName.length >= 1 && p.RoleName.length <= 64, p.RoleName, 'roleName', 'have length between 1 and 64');
      c.check(NAME_RE.test(p.RoleName), p.RoleName, 'roleName', 'satisfy regular expression pattern: [\\w+=,.@-]+');
    }
    if (action !== 'ListRolePolicies') {
      c.check(p.PolicyName !== undefined, p.PolicyName, 'policyName', 'not be null');
      if (p.PolicyName !== undefined) {
        c.check(p.PolicyName.length >= 1 && p.PolicyName.length <= 128, p.PolicyName, 'policyName', 'have length between 1 and 128');
        c.check(NAME_RE.test(p.PolicyName), p.PolicyName, 'policyName', 'satisfy regular expression pattern: [\\w+=,.@-]+');
      }
    }
    if (action === 'PutRolePolicy') {
      c.check(p.PolicyDocument !== undefined, p.PolicyDocument, 'policyDocument', 'not be null');
      if (p.PolicyDocument !== undefined) {
        c.check(p.PolicyDocument.length >= 1 && p.PolicyDocument.length <= 131072, '…', 'policyDocument', 'have length between 1 and 131072');
        c.check(POLICY_CHARS_RE.test(p.PolicyDocument), '…', 'policyDocument', 'satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+');
      }
    }
    c.throwIfAny();
    const role = this.#roleByName(p.RoleName);
    if (!role) throw new AwsError(404, 'NoSuchEntity', `The role with name ${p.RoleName} cannot be found.`);
    const name = p.PolicyName;
    switch (action) {
      case 'PutRolePolicy': {
        const problem = policyProblem(p.PolicyDocument);
        if (problem) throw new AwsError(400, 'MalformedPolicyDocument', problem);
        const others = [...role.inline].filter(([n]) => n !== name).map(([, d]) => d);
        const size = [...others, p.PolicyDocument].reduce((n, d) => n + d.replace(/\s/g, '').length, 0);
        if (size > 10240) throw new AwsError(409, 'LimitExceeded', `Maximum policy size of 10240 bytes exceeded for role ${role.name}`);
        role.inline.set(name, p.PolicyDocument);
        return '';
      }
      case 'GetRolePolicy': {
        const doc = role.inline.get(name);
        if (doc === undefined) throw new AwsError(404, 'NoSuchEntity', `The role policy with name ${name} cannot be found.`);
        // IAM returns the document URL-encoded (RFC 3986); the SDK does not decode it.
        return `<GetRolePolicyResult>\n<PolicyName>${xmlEscape(name)}</PolicyName>\n<RoleName>${xmlEscape(role.name)}</RoleName>\n<PolicyDocument>${xmlEscape(uriEscape(doc))}</PolicyDocument>\n</GetRolePolicyResult>\n`;
      }
      case 'DeleteRolePolicy':
        if (!role.inline.delete(name)) throw new AwsError(404, 'NoSuchEntity', `The role policy with name ${name} cannot be found.`);
        return '';
      default: {
        const names = [...role.inline.keys()].sort();
        return `<ListRolePoliciesResult>\n<PolicyNames>\n${names.map((n) => `<member>${xmlEscape(n)}</member>\n`).join('')}</PolicyNames>\n<IsTruncated>false</IsTruncated>\n</ListRolePoliciesResult>\n`;
      }
    }
  }
}

/** Action/Resource (or NotAction/NotResource) match; with no value asked, only '*' counts. */
function matchesItem(list: unknown, notList: unknown, value: string | undefined, ci: boolean): boolean {
  if (list !== undefined) {
    const pats = asList(list);
    return value === undefined ? pats.includes('*') : pats.some((pt) => wildcard(pt, ci).test(value));
  }
  if (notList !== undefined) return value !== undefined && !asList(notList).some((pt) => wildcard(pt, ci).test(value));
  return false;
}
