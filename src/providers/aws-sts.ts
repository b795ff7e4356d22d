/**
 * AWS STS provider (@aws-sdk/client-sts AssumeRole; @aws-sdk/client-iam for revocation).
 *
 * Naming, so CloudTrail and IAM conditions can tell sessions and credentials apart:
 * - SourceIdentity  `<root agent id>.<session id>`: one per Cordon session, set by AssumeRole and
 *   immutable for the life of the credentials (it also survives role chaining). A revocation
 *   denies `aws:SourceIdentity` of that session, so it hits that session only.
 * - RoleSessionName `cordon.<holder name>.<session tail>.<credential tail>`: unique per credential,
 *   so revoking some tokens of a live session can deny exactly their credentials (`aws:userid`
 *   is `<role id>:<role session name>` for a role session).
 * - Session tags: agent (the holder), session, task, depth. The role's trust policy must allow
 *   `sts:AssumeRole`, `sts:TagSession` and `sts:SetSourceIdentity` for the broker.
 *
 * Lifetime: a credential never outlives the token that asked for it. `DurationSeconds` = the
 * token's remaining life capped by the policy `ttl`, but STS never issues less than 900 s, so every
 * AssumeRole carries a session policy whose Allow statements hold only while aws:CurrentTime is
 * before the token's exp (policy/session-policy.ts): the keys may exist at STS for longer, but
 * can do nothing after it, and the answer's expiry is the earlier of the two. No IAM write, nothing
 * to clean up. A broker that itself runs on role credentials is *role chaining*: AWS caps the
 * duration at 1 hour; the provider detects that answer, caps at 3600 s from then on, and retries once.
 *
 * Revocation: AWS cannot revoke one session's keys. With `revoke_via_iam` (the default) each revocation
 * records deny entries in `iam_denies` (a revoked session: its source identity; a credential revoked
 * alone inside a live session: its aws:userid) and then rewrites the role's ONE inline policy,
 * `cordon-revocations`, in full from every active entry of that role in the database (never a
 * read-modify-write of IAM): IAM allows 10,240 characters of inline policy per role, which one
 * policy per revocation would exhaust after ~30. Entries that do not fit are reported failed. The
 * sweeper drops entries once everything they denied has expired and rebuilds (or deletes) the
 * policy of every role with entries on each sweep, which also repairs a write lost to a race.
 * Without it, the revocation is recorded and the credential is reported alive until it expires.
 */
import { AssumeRoleCommand, GetCallerIdentityCommand, STSClient, type AssumeRoleCommandInput } from '@aws-sdk/client-sts';
import { DeleteRolePolicyCommand, IAMClient, PutRolePolicyCommand } from '@aws-sdk/client-iam';
import type { StsConfig } from '../config/index.ts';
import { CordonError } from '../errors.ts';
import { stsError } from './aws-sts-errors.ts';
import { NAME_RE, roleSessionNameFor, sourceIdentityFor, tagSafe } from './aws-sts-names.ts';
import { INLINE_POLICY_LIMIT, REVOCATION_POLICY, buildRevocationPolicy, denyGroups, roleNameOf } from './aws-iam-denies.ts';
import { SessionPolicyError, timeBoundSessionPolicy } from '../policy/session-policy.ts';
import {
  type CredentialProvider,
  type DenyApplyResult,
  type DenyRecord,
  type Handle,
  type IssuePlan,
  type IssueRequest,
  type IssueResult,
  type ProviderDeps,
  type ProviderHealth,
  type ReconcileContext,
  type RevokeContext,
  type RevokeResult,
  type RevokeTarget,
  ProviderError,
} from './provider.ts';

/** STS's floor for DurationSeconds. */
export const STS_MIN_DURATION = 900;
export { INLINE_POLICY_LIMIT, REVOCATION_POLICY, buildRevocationPolicy } from './aws-iam-denies.ts';
export { roleSessionNameFor, sourceIdentityFor, tagSafe } from './aws-sts-names.ts';
/** AWS's cap when the caller is itself an assumed role (role chaining). */
export const ROLE_CHAINING_MAX = 3600;
const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** Where the session policy ends the keys: the token's exp, whole seconds (IAM compares seconds; never later). */
const timeBoundOf = (req: IssueRequest): number => Math.floor(req.tokenExpiresAt / 1000) * 1000;

export class StsProvider implements CredentialProvider {
  readonly name = 'aws-sts' as const;
  readonly #cfg: StsConfig;
  readonly #deps: ProviderDeps;
  readonly #sts: STSClient;
  readonly #iam: IAMClient;
  /** Learned from AWS's answer: the broker runs on role credentials, so durations are capped at 1 h. */
  #chained = false;

  constructor(cfg: StsConfig, deps: ProviderDeps) {
    this.#cfg = cfg;
    this.#deps = deps;
    const requestHandler = { requestTimeout: cfg.timeoutMs, connectionTimeout: cfg.timeoutMs, throwOnRequestTimeout: true };
    // The agent is waiting: one attempt, bounded by the timeout; the agent retries. IAM cleanup may retry.
    this.#sts = new STSClient({ region: cfg.region, ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}), maxAttempts: 1, requestHandler });
    this.#iam = new IAMClient({ region: cfg.region, ...(cfg.iamEndpoint ? { endpoint: cfg.iamEndpoint } : {}), maxAttempts: 3, requestHandler });
  }

  plan(req: IssueRequest): IssuePlan {
    const spec = req.spec;
    if (spec.provider !== 'aws-sts') throw new Error('aws-sts provider given a non-sts credential');
    // The token bounds the credential (it never outlives its session, so neither does the credential).
    const left = req.remainingSec.token;
    if (left < 1) throw new CordonError('invalid_token', 'token expires in less than a second: get a fresh token first', { reason: 'token_expiring' });
    // STS's floor may outlive the token: the session policy's time bound ends the keys at its exp.
    let duration = Math.max(STS_MIN_DURATION, Math.min(spec.ttl, left));
    if (this.#chained) duration = Math.min(duration, ROLE_CHAINING_MAX);
    const handle: Handle = {
      kind: 'sts',
      role_arn: spec.role_arn,
      source_identity: sourceIdentityFor(req.session.agentId, req.session.sid),
      role_session_name: roleSessionNameFor(req.holderName, req.session.sid, req.credentialId),
      revoke_via_iam: spec.revoke_via_iam !== false,
    };
    const latest = req.now + duration * 1000 + this.#deps.clockSkewSec * 1000;
    return { ttlSec: duration, expiresAtMax: Math.min(latest, timeBoundOf(req)), handle };
  }

  async issue(req: IssueRequest, plan: IssuePlan, checkpoint: (h: Handle) => Promise<void>): Promise<IssueResult> {
    const spec = req.spec;
    if (spec.provider !== 'aws-sts') throw new Error('aws-sts provider given a non-sts credential');
    const h = plan.handle!;
    if (!NAME_RE.test(String(h.source_identity)) || !NAME_RE.test(String(h.role_session_name))) throw new Error('derived STS names are out of pattern');
    // Every Allow of the session policy ends at the token's exp (AWS evaluates it on each request).
    const bound = timeBoundOf(req);
    let Policy: string;
    try {
      Policy = JSON.stringify(timeBoundSessionPolicy(spec.session_policy, bound));
    } catch (e) {
      if (!(e instanceof SessionPolicyError)) throw e;
      throw new ProviderError(
        'aws-sts',
        'misconfigured',
        `the session_policy of credential ${req.name} cannot carry the time bound (${e.message}); fix the policy (policy lint says so too)`,
        e,
      );
    }
    // Everything needed to deny this credential is known before the call.
    await checkpoint(h);
    const input: AssumeRoleCommandInput = {
      RoleArn: spec.role_arn,
      RoleSessionName: String(h.role_session_name),
      DurationSeconds: plan.ttlSec,
      SourceIdentity: String(h.source_identity),
      Tags: [
        { Key: 'agent', Value: tagSafe(req.claims.client_id) },
        { Key: 'session', Value: tagSafe(req.session.sid) },
        ...(req.session.task ? [{ Key: 'task', Value: tagSafe(req.session.task) }] : []),
        { Key: 'depth', Value: String(req.claims.cordon_depth ?? 0) },
      ],
      Policy,
      ...(spec.policy_arns?.length ? { PolicyArns: spec.policy_arns.map((arn) => ({ arn })) } : {}),
      ...(spec.external_id ? { ExternalId: spec.external_id } : {}),
    };
    let out;
    try {
      out = await this.#assume(input);
    } catch (e) {
      const err = e as { name?: string; message?: string };
      if (err.name === 'ValidationError' && /role chaining/i.test(err.message ?? '') && (input.DurationSeconds ?? 0) > ROLE_CHAINING_MAX) {
        this.#chained = true;
        this.#deps.log.warn({}, 'aws-sts: the broker runs on role credentials (role chaining): STS durations are capped at 1 hour');
        input.DurationSeconds = ROLE_CHAINING_MAX; // what was asked in the end (audited as duration_sec)
        try {
          out = await this.#assume(input);
        } catch (e2) {
          throw this.#mapError('AssumeRole', e2, spec.role_arn);
        }
      } else throw this.#mapError('AssumeRole', e, spec.role_arn);
    }
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !(c.Expiration instanceof Date))
      throw new ProviderError('aws-sts', 'bad_answer', 'AWS STS answered AssumeRole without complete credentials');
    const stsExpiresAt = c.Expiration.getTime();
    // The keys can do nothing after the token's exp: said so, so SDKs refresh in time.
    const expiresAt = Math.min(stsExpiresAt, bound);
    return {
      credentials: {
        AccessKeyId: c.AccessKeyId,
        SecretAccessKey: c.SecretAccessKey,
        SessionToken: c.SessionToken,
        Expiration: new Date(expiresAt).toISOString(),
      },
      expiresAt,
      handle: { ...h, access_key_id: c.AccessKeyId, assumed_role_id: out.AssumedRoleUser?.AssumedRoleId ?? null },
      details: {
        role_arn: spec.role_arn,
        role_session_name: h.role_session_name,
        source_identity: h.source_identity,
        duration_sec: input.DurationSeconds,
        tags: (input.Tags ?? []).map((t) => t.Key),
        session_policy: spec.session_policy !== undefined,
        ...(spec.policy_arns?.length ? { policy_arns: spec.policy_arns } : {}),
        time_bound: iso(bound),
        ...(stsExpiresAt > bound ? { sts_expires_at: iso(stsExpiresAt) } : {}),
        access_key_id: c.AccessKeyId,
      },
    };
  }

  async #assume(input: AssumeRoleCommandInput) {
    return this.#sts.send(new AssumeRoleCommand(input), { abortSignal: AbortSignal.timeout(this.#cfg.timeoutMs) });
  }

  // ------------------------------------------------------------------ revoke

  async revoke(targets: RevokeTarget[], ctx: RevokeContext): Promise<RevokeResult[]> {
    const results: RevokeResult[] = [];
    const groups = new Map<string, RevokeTarget[]>();
    for (const t of targets) {
      const h = t.handle;
      if (!h || h.kind !== 'sts' || typeof h.role_arn !== 'string' || typeof h.source_identity !== 'string') {
        results.push({ id: t.id, outcome: 'unknown', note: 'no STS handle was recorded' });
      } else if (t.expiresAt <= ctx.now) {
        results.push({ id: t.id, outcome: 'expired', note: `expired at ${iso(t.expiresAt)}; nothing to deny` });
      } else if (ctx.scope === 'expired') {
        // The session simply ended: what was issued inside it ends with its tokens (by expiry or by
        // its session policy's time bound). Something still alive was issued before credentials were bound to their token. No deny.
        results.push({
          id: t.id,
          outcome: 'not_revocable',
          note: `the session ended (not revoked); this credential was issued to outlive it, until ${iso(t.expiresAt)}, and is not denied`,
        });
      } else {
        const key = `${h.role_arn}\n${h.source_identity}`;
        groups.set(key, [...(groups.get(key) ?? []), t]);
      }
    }
    const viaIam: RevokeTarget[][] = [];
    for (const group of groups.values()) {
      // A deny on a role covers every credential of that session on that role, so one credential
      // that may be revoked through IAM carries the others of the group with it.
      if (group.some((t) => t.handle!.revoke_via_iam === true)) viaIam.push(group);
      else
        for (const t of group)
          results.push({
            id: t.id,
            outcome: 'not_revocable',
            note: `AWS cannot revoke STS credentials one by one and revoke_via_iam is off for this credential: it stays valid until ${iso(t.expiresAt)}`,
          });
    }
    if (viaIam.length) results.push(...(await this.#denyGroups(viaIam, ctx)));
    return results;
  }

  /**
   * Rewrites the role's one revocation policy from these entries (the database's active ones, oldest
   * first): PutRolePolicy of the whole document, or DeleteRolePolicy when nothing is left. Entries
   * beyond IAM's inline budget are left out and reported as omitted, never dropped silently.
   */
  #denyGroups(groups: RevokeTarget[][], ctx: RevokeContext): Promise<RevokeResult[]> {
    return denyGroups(groups, ctx, {
      skewMs: this.#deps.clockSkewSec * 1000,
      apply: (roleArn, all) => this.applyDenies(roleArn, all),
      mapError: (op, e, roleArn) => this.#mapError(op, e, roleArn),
    });
  }

  async applyDenies(roleArn: string, entries: DenyRecord[]): Promise<DenyApplyResult> {
    const built = buildRevocationPolicy(entries, this.#deps.clockSkewSec * 1000);
    const RoleName = roleNameOf(roleArn);
    const opts = { abortSignal: AbortSignal.timeout(this.#cfg.timeoutMs * 2) };
    if (built.document === null) {
      try {
        await this.#iam.send(new DeleteRolePolicyCommand({ RoleName, PolicyName: REVOCATION_POLICY }), opts);
      } catch (e) {
        const name = (e as { name?: string }).name;
        if (name !== 'NoSuchEntity' && name !== 'NoSuchEntityException') throw this.#mapError('DeleteRolePolicy', e, roleArn);
      }
    } else {
      try {
        await this.#iam.send(new PutRolePolicyCommand({ RoleName, PolicyName: REVOCATION_POLICY, PolicyDocument: built.document }), opts);
      } catch (e) {
        throw this.#mapError('PutRolePolicy', e, roleArn);
      }
    }
    if (built.omitted.length)
      this.#deps.log.warn(
        { role: roleArn, omitted: built.omitted.length, applied: built.applied.length },
        `aws-sts: revocations do not fit in the ${INLINE_POLICY_LIMIT}-character inline policy budget of the role; the newest are not denied`,
      );
    return { applied: built.applied, omitted: built.omitted };
  }

  /** Removes a legacy per-revocation inline policy (`cordon-revoke-<id>`, written before migration 002). */
  async removeDeny(d: { roleArn: string; policyName: string }): Promise<void> {
    try {
      await this.#iam.send(new DeleteRolePolicyCommand({ RoleName: roleNameOf(d.roleArn), PolicyName: d.policyName }), {
        abortSignal: AbortSignal.timeout(this.#cfg.timeoutMs * 2),
      });
    } catch (e) {
      if ((e as { name?: string }).name === 'NoSuchEntity' || (e as { name?: string }).name === 'NoSuchEntityException') return; // already gone
      throw this.#mapError('DeleteRolePolicy', e, d.roleArn);
    }
  }

  /**
   * Every sweep: legacy per-revocation policies (before migration 002) are deleted once due, and
   * every role with entries gets its one policy rebuilt from the database (entries whose
   * credentials have all expired dropped; the policy deleted when none is left), which also
   * repairs a PUT lost to a race between replicas within one interval.
   */
  async reconcile(ctx: ReconcileContext): Promise<number> {
    let removed = 0;
    for (const d of await ctx.dueLegacyDenies()) {
      try {
        await this.removeDeny(d);
      } catch (e) {
        this.#deps.log.warn({ err: (e as Error).message, policy: d.policyName, role: d.roleArn }, 'aws-sts: could not remove an IAM deny; will retry');
        continue;
      }
      await ctx.legacyDenyRemoved(d.id);
      removed++;
    }
    for (const roleArn of await ctx.deniedRoles()) {
      try {
        removed += await ctx.rebuildRole(roleArn, (keep) => this.applyDenies(roleArn, keep));
      } catch (e) {
        this.#deps.log.warn({ err: (e as Error).message, role: roleArn }, 'aws-sts: could not rebuild the IAM revocation policy of a role; will retry');
      }
    }
    return removed;
  }

  async health(): Promise<ProviderHealth> {
    try {
      const me = await this.#sts.send(new GetCallerIdentityCommand({}), { abortSignal: AbortSignal.timeout(this.#cfg.timeoutMs) });
      return { ok: true, detail: `calling AWS as ${me.Arn}` };
    } catch (e) {
      return { ok: false, detail: this.#mapError('GetCallerIdentity', e).description };
    }
  }

  async close(): Promise<void> {
    this.#sts.destroy();
    this.#iam.destroy();
  }

  #mapError(op: string, e: unknown, roleArn?: string): ProviderError {
    return stsError(op, e, { timeoutMs: this.#cfg.timeoutMs, region: this.#cfg.region, roleArn });
  }
}
