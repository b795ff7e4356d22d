/**
 * Backend credentials: the decisions (who may have `<name>`, for how long) and the bookkeeping
 * that makes every credential die with its session, whatever crashes in between.
 *
 * Issue:  checks → intent row ('pending', committed) → provider.issue (checkpoints a revocable
 *         handle before anything exists an agent could hold) → one transaction: 'issued' + audit.
 *         A provider failure marks the row 'failed' (audited) after cleaning up anything the
 *         backend may have created; a lost commit or a revocation that raced the issue revokes
 *         the fresh credential at once.
 * Revoke: `b.hooks.onRevoked` (revoked sessions and tokens), the sweeper (ended sessions,
 *         retries, orphans). Rows are claimed with conditional UPDATEs first, so concurrent
 *         revokers (hook, sweeper, other replicas) never double-act.
 */
import type { Broker } from '../broker.ts';
import { appendAudit } from '../audit/log.ts';
import { CordonError } from '../errors.ts';
import { newId } from '../ids.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { covers, parseScope } from '../policy/scopes.ts';
import type { CredentialSpec } from '../policy/types.ts';
import { type CredentialRow, type CredentialState, credentials, denyEntriesOf, iamDenies } from '../store/credentials.ts';
import type { CredentialOutcome } from '../store/issuance-writer.ts';
import { driverMessage } from '../store/db.ts';
import { ENABLING_VARIABLE, type Providers } from '../providers/index.ts';
import type { CredentialProvider, DenyHooks, DenyRecord, Handle, IssueRequest, RevokeContext, RevokeResult, RevokeTarget } from '../providers/provider.ts';
import { isProviderError } from '../providers/provider.ts';
import { recordBackendError } from '../http/metrics.ts';
import { audiencesOf, chainOf, type AccessTokenClaims } from './claims.ts';
import { requireDpopForToken } from './dpop.ts';
import type { Attempt } from '../audit/attempt.ts';
import { recordClaims, requireActiveRecord, verifySignature, type TokenView } from './verify.ts';

// ---------------------------------------------------------------------------------------- wiring

const registry = new WeakMap<Broker, Providers>();

/** The providers attached to this broker (empty when none is configured). */
export const providersOf = (b: Broker): Providers => registry.get(b) ?? new Map();

/**
 * Attaches providers to a broker and makes revocations reach the backends. Returns a function
 * that detaches them again (runtime stop, tests).
 */
export function attachProviders(b: Broker, providers: Providers): () => void {
  registry.set(b, providers);
  const hook = (r: { sids: string[]; jtis: string[] }): Promise<void> => revokeBackendCredentials(b, r).then(() => undefined);
  b.hooks.onRevoked.push(hook);
  return () => {
    const i = b.hooks.onRevoked.indexOf(hook);
    if (i >= 0) b.hooks.onRevoked.splice(i, 1);
    if (registry.get(b) === providers) registry.delete(b);
  };
}

// ---------------------------------------------------------------------------------------- issue

export interface CredentialRequest {
  jwt: string;
  name: string;
  /** How the token was presented (`Authorization: Bearer` or `Authorization: DPoP`). */
  scheme?: 'Bearer' | 'DPoP';
  dpopProof?: string;
  /** For the DPoP proof's htm / htu. */
  method: string;
  url: string;
}

export interface CredentialResponse {
  name: string;
  provider: string;
  expires_at: string;
  lease_id?: string;
  credentials: Record<string, unknown>;
  /**
   * A static secret (Vault KV v2): the value was not made for this session and cannot be revoked,
   * only the token that read it; `expires_at` is then advice (re-read by then), not when it stops working.
   */
  static?: true;
}

const EVENT = 'credential.issue';

/**
 * `POST /credentials/:name`: the token must be active (and its DPoP proof valid when bound), its
 * scope must hold `cred:<name>`, the session's root policy must define `<name>` and its provider
 * must be on. The credential never outlives the token's `exp` (STS: ended there by its session
 * policy where STS's 900 s floor is longer), and exists only if its record and audit row do.
 */
export async function issueCredential(b: Broker, req: CredentialRequest, attempt: Attempt): Promise<CredentialResponse> {
  // Refused before anyone is known: the row says what was asked, never the token itself.
  attempt.note({ name: String(req.name).slice(0, 64) });
  const presented = await verifySignature(b, req.jwt, 'invalid_token');
  // Signed by this broker: a refusal from here on names its agent, so a replayed revoked token is
  // written one by one, never summarised as junk.
  attempt.by(presented.client_id).in(presented.sid, presented.jti);
  const view = await requireActiveRecord(b, presented, 'invalid_token');
  // From here on every decision reads the token as the broker recorded it.
  const claims = recordClaims(b, view);
  const chain = chainOf(claims, view.sessionAgentId);
  attempt.by(claims.client_id, chain).in(claims.sid, claims.jti);
  // A token made for a resource server is not for the broker: that server (or whoever read the
  // token there) must not be able to trade it for backend credentials (RFC 8707 audience restriction).
  if (!audiencesOf(claims).includes(b.config.issuer)) {
    throw new CordonError('invalid_token', `the token's audience does not include this broker (${b.config.issuer}); ask for a token with the broker among its audiences`, { reason: 'audience_not_broker' });
  }

  await checkDpop(b, req, view);
  const { provider, spec, ireq } = decide(b, req.name, claims, view);
  attempt.note({ provider: spec.provider });
  const plan = provider.plan(ireq);

  // Intent first: from here on a crash leaves a row the sweeper can resolve.
  await b.issuance.insertCredentialIntent({
    id: ireq.credentialId,
    sid: view.sid,
    jti: view.jti,
    agentId: claims.client_id,
    name: req.name,
    provider: spec.provider,
    createdAt: ireq.now,
    expiresAt: plan.expiresAtMax,
    handle: null,
  });
  let checkpointed: Handle | null = null;
  const checkpoint = async (h: Handle): Promise<void> => {
    checkpointed = h; // known to this process even if the write below fails: failIssue cleans it up
    if (!(await b.issuance.checkpointCredential(ireq.credentialId, h))) throw new CordonError('temporarily_unavailable', 'the credential request took too long and was rolled back; try again', { reason: 'intent_claimed' });
  };

  let result;
  try {
    result = await provider.issue(ireq, plan, checkpoint);
  } catch (e) {
    await failIssue(b, provider, ireq, plan.expiresAtMax, checkpointed, e, chain, attempt);
    throw e instanceof CordonError ? e : new CordonError('bad_gateway', `${spec.provider} failed unexpectedly`, { reason: `${spec.provider}_error`, cause: e });
  }

  // One transaction (shared with concurrent issues): the record, the audit row, and a last look at
  // the token, so a revocation that committed meanwhile is never missed (its hook ran before this row was issued).
  let outcome: CredentialOutcome;
  try {
    outcome = await b.issuance.recordCredential({
      credentialId: ireq.credentialId,
      jti: view.jti,
      handle: result.handle,
      expiresAt: result.expiresAt,
      audit: (live) => ({
        at: b.clock.now(),
        event: EVENT,
        decision: live ? 'allow' : 'info',
        agentId: claims.client_id,
        sid: claims.sid,
        jti: claims.jti,
        chain,
        ...(live ? {} : { reason: 'issued at the backend while the token was being revoked (or an agent of its chain disabled): revoked at once, not returned' }),
        params: {
          name: req.name,
          provider: spec.provider,
          credential_id: ireq.credentialId,
          expires_at: new Date(result.expiresAt).toISOString(),
          ...(result.leaseId ? { lease_id: result.leaseId } : {}),
          ...result.details,
        },
      }),
    });
  } catch (e) {
    // The backend issued but the broker could not record it: take it back now, and record that (or
    // leave it to the sweeper as revoke_failed, or to orphan recovery if the database stays away).
    b.log.error({ err: driverMessage(e), credential: ireq.credentialId }, 'could not record an issued credential; revoking it at the backend');
    const failure = new CordonError('temporarily_unavailable', 'the broker could not record the credential, so it was revoked at the backend; try again', { reason: 'record_failed', cause: e });
    // The record may have committed after all (a lost reply): then it is revoked like any issued credential, with its audit row.
    const row = await credentials.get(b.db, ireq.credentialId).catch(() => undefined);
    if (row?.state === 'issued') await revokeRows(b, [row], { scope: 'token', claim: 'issued', why: 'the broker could not confirm its record, so the credential was not handed out' }).catch(() => undefined);
    else await failIssue(b, provider, ireq, result.expiresAt, result.handle, failure, chain, attempt);
    throw failure;
  }
  if (outcome === 'claimed') {
    // Orphan recovery took the intent (the backend was slower than the grace period) and revokes what it names; make sure of the rest.
    await provider.revoke([target(ireq.credentialId, view, result.handle, result.expiresAt)], revokeCtx(b, 'token')).catch(() => undefined);
    throw new CordonError('temporarily_unavailable', `${spec.provider} answered too late; the credential was revoked. Try again`, { reason: 'issue_too_slow' });
  }
  if (outcome === 'token_revoked') {
    const row = await credentials.get(b.db, ireq.credentialId);
    if (row) await revokeRows(b, [row], { scope: 'token', claim: 'issued', why: 'the token was revoked (or an agent of its chain disabled) while the credential was being issued' });
    attempt.note({ credential_id: ireq.credentialId });
    throw new CordonError('invalid_token', 'the token was revoked (or an agent of its chain disabled) while the credential was being issued; the credential has been revoked', { reason: 'token_revoked_during_issue' });
  }
  for (const f of b.hooks.onDecision) f(EVENT, 'allow', null);
  return {
    name: req.name,
    provider: spec.provider,
    expires_at: new Date(result.expiresAt).toISOString(),
    ...(result.leaseId ? { lease_id: result.leaseId } : {}),
    credentials: result.credentials,
    ...(result.static ? { static: true as const } : {}),
  };
}

interface Decided {
  provider: CredentialProvider;
  spec: CredentialSpec;
  ireq: IssueRequest;
}

/** Every bound, checked in order, each refusal naming what failed. No writes. */
function decide(b: Broker, name: string, claims: AccessTokenClaims, view: TokenView): Decided {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) throw new CordonError('invalid_request', `credential name must match ${NAME_PATTERN.source}`, { reason: 'credential_name_malformed' });
  const held = parseScope(view.scope);
  if (!covers(held, `cred:${name}`)) throw new CordonError('insufficient_scope', `token scope does not grant cred:${name}`, { reason: 'cred_not_in_scope' });
  // The session's root agent and its policy define what credentials exist in this session (the
  // token view read them with the token: requireActiveToken has refused an inactive root already).
  const policy = b.policies.get(view.rootPolicy);
  if (!policy) throw new CordonError('insufficient_scope', `the session's root policy "${view.rootPolicy}" is not loaded`, { reason: 'policy_missing' });
  const spec = Object.hasOwn(policy.credentials, name) ? policy.credentials[name] : undefined;
  if (!spec) throw new CordonError('insufficient_scope', `policy ${policy.name} (the session's root policy) defines no credential ${name}`, { reason: 'cred_not_defined' });
  const provider = providersOf(b).get(spec.provider);
  if (!provider) throw new CordonError('temporarily_unavailable', `the ${spec.provider} provider is not configured on this broker (${ENABLING_VARIABLE[spec.provider]} is unset), so credential ${name} cannot be issued`, { reason: `${spec.provider}_off` });
  const now = b.clock.now();
  const tokenExp = Math.min(view.expiresAt, claims.exp * 1000);
  const sessionExp = view.sessionExpiresAt;
  const ireq: IssueRequest = {
    credentialId: newId('crd'),
    session: { sid: view.sid, agentId: view.sessionAgentId, agentName: view.rootName, task: view.sessionTask, expiresAt: sessionExp },
    claims,
    holderName: view.holderName,
    name,
    spec,
    now,
    remainingSec: { token: Math.floor((tokenExp - now) / 1000), session: Math.floor((sessionExp - now) / 1000) },
    tokenExpiresAt: tokenExp,
  };
  return { provider, spec, ireq };
}

/**
 * RFC 9449 at a protected resource: a DPoP-bound token needs `Authorization: DPoP` and a proof made
 * with its key over this request (htm, htu, ath) — requireDpopForToken; an unbound token may not
 * pose as DPoP. A bad proof is a 401 here (a resource, not the token endpoint).
 */
async function checkDpop(b: Broker, req: CredentialRequest, view: TokenView): Promise<void> {
  if (!view.cnfJkt) {
    if (req.scheme === 'DPoP') throw new CordonError('invalid_token', 'token is not DPoP-bound: present it as Authorization: Bearer', { reason: 'dpop_unbound' });
    return;
  }
  // RFC 9449 §7.1: a bound token presented as a bearer token is refused outright (scheme unknown: the proof decides).
  if (req.scheme === 'Bearer') throw new CordonError('invalid_token', 'token is DPoP-bound: present it as Authorization: DPoP with a DPoP proof', { reason: 'dpop_scheme' });
  try {
    // The record is the truth for the binding (it matched the claims when minted).
    await requireDpopForToken(b, { claims: { cnf: { jkt: view.cnfJkt } }, proof: req.dpopProof, method: req.method, url: req.url, accessToken: req.jwt });
  } catch (e) {
    if (e instanceof CordonError && e.code === 'invalid_dpop_proof') throw new CordonError('invalid_dpop_proof', e.description, { reason: e.reason, status: 401 });
    throw e;
  }
}

/**
 * The provider failed. Whatever the backend may have created is cleaned up: a checkpointed handle
 * names it. The row ends 'failed' (nothing issued, or everything cleaned) or 'revoke_failed'
 * (cleanup pending: the sweeper retries until it succeeds or the credential has expired).
 */
async function failIssue(b: Broker, provider: CredentialProvider, ireq: IssueRequest, expiresAtMax: number, handle: Handle | null, err: unknown, chain: string[], attempt: Attempt): Promise<void> {
  const desc = err instanceof CordonError ? err.description : 'unexpected provider failure';
  const reason = err instanceof CordonError ? err.reason : `${provider.name}_error`;
  if (isProviderError(err)) recordBackendError(b, err.provider, err.kind);
  else if (!(err instanceof CordonError)) recordBackendError(b, provider.name, 'unexpected');
  let state: CredentialState = 'failed';
  let note = `not issued: ${desc}`;
  // STS checkpoints names before the call (nothing exists yet unless the answer was lost); Vault checkpoints a parent that exists.
  const maybeExists = handle !== null && (handle.kind !== 'sts' || !isProviderError(err) || err.kind === 'timeout' || err.kind === 'bad_answer' || err.kind === 'down');
  if (maybeExists) {
    let r: RevokeResult | undefined;
    try {
      [r] = await provider.revoke([{ id: ireq.credentialId, sid: ireq.session.sid, jti: ireq.claims.jti, handle, expiresAt: expiresAtMax }], revokeCtx(b, 'orphan'));
    } catch (e) {
      r = { id: ireq.credentialId, outcome: 'failed', note: (e as Error).message, ...(isProviderError(e) ? { kind: e.kind } : {}) };
    }
    if (r?.outcome === 'failed') {
      if (r.kind) recordBackendError(b, provider.name, r.kind);
      state = 'revoke_failed';
      note = `not issued: ${desc}; cleanup of what the backend may have created failed (${r.note}); retrying`;
    } else if (r) note = `not issued: ${desc}; cleanup: ${r.outcome}${r.note ? ` (${r.note})` : ''}`;
  }
  try {
    await b.db.transaction(async (tx) => {
      const changed =
        state === 'failed'
          ? await credentials.markFailed(tx, ireq.credentialId, note)
          : (await tx('credentials').where({ id: ireq.credentialId, state: 'pending' }).update({ state, revoked_at: b.clock.now(), note: note.slice(0, 500) })) > 0;
      if (!changed) return;
      // The intent's end, recorded with it; the refusal itself is the entry point's deny row.
      await appendAudit(tx, {
        at: b.clock.now(),
        event: 'credential.fail',
        decision: 'info',
        agentId: ireq.claims.client_id,
        sid: ireq.session.sid,
        jti: ireq.claims.jti,
        chain,
        reason: `${reason}: ${desc}`,
        params: { name: ireq.name, provider: provider.name, credential_id: ireq.credentialId, state, note },
      });
    });
  } catch (e) {
    b.log.error({ err: (e as Error).message, credential: ireq.credentialId }, 'could not record a failed credential issue; orphan recovery will resolve the intent');
  }
  attempt.note({ credential_id: ireq.credentialId, state });
}

// ---------------------------------------------------------------------------------------- revoke

const target = (id: string, v: { sid: string; jti: string }, handle: Handle | null, expiresAt: number): RevokeTarget => ({ id, sid: v.sid, jti: v.jti, handle, expiresAt });

function revokeCtx(b: Broker, scope: RevokeContext['scope']): RevokeContext {
  return { now: b.clock.now(), scope, ...denyHooks(b, scope) };
}

/** The database side of IAM deny entries, for a revocation (its scope). */
function denyHooks(b: Broker, scope: RevokeContext['scope']): DenyHooks {
  return {
    recordDeny: (entries) =>
      b.db.transaction(async (tx) => {
        const at = b.clock.now();
        const bySid = new Map<string, DenyRecord[]>();
        for (const d of entries) {
          await iamDenies.insert(tx, { id: d.id, roleArn: d.roleArn, policyName: d.policyName, sid: d.sid, kind: d.kind, subject: d.subject, revokedAt: d.revokedAt, createdAt: at, removeAfter: d.removeAfter });
          const k = `${d.sid}\n${d.roleArn}`;
          bySid.set(k, [...(bySid.get(k) ?? []), d]);
        }
        for (const group of bySid.values()) {
          const d = group[0];
          await appendAudit(tx, {
            at,
            event: 'credential.iam_deny',
            decision: 'info',
            sid: d.sid,
            reason: `deny on role ${d.roleArn} for revoked STS credentials`,
            params: {
              role_arn: d.roleArn,
              policy_name: d.policyName,
              kind: d.kind,
              subjects: group.map((x) => x.subject),
              entries: group.map((x) => x.id),
              remove_after: new Date(Math.max(...group.map((x) => x.removeAfter))).toISOString(),
              scope,
            },
          });
        }
      }),
    syncDenies: (roleArn, mine, apply) =>
      iamDenies.withRole(b.db, roleArn, async (q, rows) => {
        // Entries past remove_after deny only expired credentials: left out (the sweeper marks them removed).
        const now = b.clock.now();
        const res = await apply(denyEntriesOf(rows.filter((r) => r.removeAfter > now)));
        // What did not fit is withdrawn: the credential is reported revoke_failed and retried, never claimed denied.
        const omitted = new Set(res.omitted);
        const withdraw = rows.filter((r) => mine.includes(r.id) && omitted.has(r.id));
        if (withdraw.length) {
          const at = b.clock.now();
          await q.transaction(async (tx) => {
            await iamDenies.markRemovedMany(tx, withdraw.map((r) => r.id), at);
            for (const sid of new Set(withdraw.map((r) => r.sid)))
              await appendAudit(tx, {
                at,
                event: 'credential.iam_deny_removed',
                decision: 'info',
                sid,
                reason: `the deny did not fit in role ${roleArn}'s inline policy budget: not applied, revocation retried`,
                params: { role_arn: roleArn, entries: withdraw.filter((r) => r.sid === sid).map((r) => r.id) },
              });
          });
        }
        return res;
      }),
  };
}

export interface RevokeSummary {
  revoked: number;
  notRevocable: number;
  failed: number;
  /** Rows someone else had already claimed. */
  skipped: number;
}

/**
 * Claims the rows (conditional UPDATE from the state named by `claim`), asks each provider to revoke
 * its rows in one batch, and records every outcome with its audit row.
 */
export async function revokeRows(
  b: Broker,
  rows: CredentialRow[],
  opts: { scope: RevokeContext['scope']; claim: 'issued' | 'pending' | 'retry'; why: string; pendingBefore?: number; retryBefore?: number },
): Promise<RevokeSummary> {
  const sum: RevokeSummary = { revoked: 0, notRevocable: 0, failed: 0, skipped: 0 };
  const now = b.clock.now();
  const mine: CredentialRow[] = [];
  for (const r of rows) {
    const ok =
      opts.claim === 'issued'
        ? await credentials.claimIssued(b.db, r.id, now, `revoking: ${opts.why}`)
        : opts.claim === 'pending'
          ? await credentials.claimPending(b.db, r.id, now, opts.pendingBefore ?? now, `orphan recovery: ${opts.why}`)
          : await credentials.claimRetry(b.db, r.id, now, opts.retryBefore ?? now);
    if (ok) mine.push(r);
    else sum.skipped++;
  }
  const byProvider = new Map<string, CredentialRow[]>();
  for (const r of mine) byProvider.set(r.provider, [...(byProvider.get(r.provider) ?? []), r]);
  for (const [name, group] of byProvider) {
    const provider = providersOf(b).get(name as never);
    let results: RevokeResult[];
    if (!provider) {
      results = group.map((r) => ({ id: r.id, outcome: 'failed' as const, note: `the ${name} provider is not configured on this broker` }));
    } else {
      try {
        results = await provider.revoke(
          group.map((r) => target(r.id, r, r.handle as Handle | null, r.expiresAt)),
          revokeCtx(b, opts.scope),
        );
      } catch (e) {
        results = group.map((r) => ({ id: r.id, outcome: 'failed' as const, note: (e as Error).message, kind: isProviderError(e) ? e.kind : undefined }));
      }
    }
    const byId = new Map(results.map((x) => [x.id, x]));
    for (const r of group) {
      const res = byId.get(r.id) ?? { id: r.id, outcome: 'failed' as const, note: 'the provider gave no answer for this credential' };
      if (res.outcome === 'failed' && res.kind) recordBackendError(b, r.provider, res.kind);
      const { state, at, decision, text } = settle(r, res, opts.claim === 'pending', now, opts.scope);
      if (state === 'revoked' || (opts.claim === 'pending' && state === 'failed')) sum.revoked++;
      else if (state === 'revoke_failed') sum.failed++;
      else sum.notRevocable++;
      await b.db.transaction(async (tx) => {
        await credentials.finish(tx, r.id, { state, at, note: text });
        await appendAudit(tx, {
          at: b.clock.now(),
          event: opts.claim === 'pending' ? 'credential.orphan' : 'credential.revoke',
          decision,
          agentId: r.agentId,
          sid: r.sid,
          jti: r.jti,
          reason: `${opts.why}: ${res.outcome}`,
          params: { name: r.name, provider: r.provider, credential_id: r.id, outcome: res.outcome, state, note: res.note, scope: opts.scope },
        });
      });
    }
  }
  return sum;
}

/** Where a revocation attempt leaves the row. */
function settle(r: CredentialRow, res: RevokeResult, orphan: boolean, now: number, scope: RevokeContext['scope']): { state: CredentialState; at: number | null; decision: 'allow' | 'info'; text: string } {
  const until = new Date(r.expiresAt).toISOString();
  switch (res.outcome) {
    case 'revoked':
      return { state: 'revoked', at: now, decision: 'allow', text: orphan ? `orphan (backend answer lost) revoked: ${res.note}` : res.note };
    case 'expired':
      return orphan ? { state: 'failed', at: null, decision: 'info', text: `orphan: anything issued expired at ${until}` } : { state: 'revoked', at: now, decision: 'info', text: res.note };
    case 'not_revocable':
      // Alive until expiry, and listed so: an issued row with revoked_at set.
      return orphan
        ? { state: 'failed', at: null, decision: 'info', text: `orphan: the broker lost the backend's answer; if it issued, the credential is valid until ${until} (${res.note})` }
        : { state: 'issued', at: now, decision: 'info', text: `${scope === 'expired' ? 'session ended' : 'revocation recorded'}; ${res.note}` };
    case 'unknown':
      return { state: 'failed', at: null, decision: 'info', text: `orphan: ${res.note}; anything created expires by ${until}` };
    default:
      return { state: 'revoke_failed', at: now, decision: 'info', text: `revocation failed, will retry: ${res.note}` };
  }
}

/**
 * After revoked sessions and tokens commit (`b.hooks.onRevoked`): every issued credential of those
 * sessions dies (scope `session`), and every credential issued to those tokens (which already
 * include their delegated subtrees) dies (scope `token`: only those credentials).
 */
export async function revokeBackendCredentials(b: Broker, r: { sids: string[]; jtis: string[] }): Promise<RevokeSummary> {
  const bySid = r.sids.length ? await credentials.revocableBySids(b.db, r.sids) : [];
  const seen = new Set(bySid.map((x) => x.id));
  const byJti = (r.jtis.length ? await credentials.revocableByJtis(b.db, r.jtis) : []).filter((x) => !seen.has(x.id));
  const a = bySid.length ? await revokeRows(b, bySid, { scope: 'session', claim: 'issued', why: 'session revoked' }) : undefined;
  const c = byJti.length ? await revokeRows(b, byJti, { scope: 'token', claim: 'issued', why: 'token revoked' }) : undefined;
  return {
    revoked: (a?.revoked ?? 0) + (c?.revoked ?? 0),
    notRevocable: (a?.notRevocable ?? 0) + (c?.notRevocable ?? 0),
    failed: (a?.failed ?? 0) + (c?.failed ?? 0),
    skipped: (a?.skipped ?? 0) + (c?.skipped ?? 0),
  };
}
