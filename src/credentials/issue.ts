/**
 * Backend credentials: who may have `<name>`, for how long, and an issue that leaves nothing
 * dangling whatever crashes in between.
 *
 * checks → intent row ('pending', committed) → provider.issue (checkpoints a revocable handle
 * before anything exists an agent could hold) → one transaction: 'issued' + audit. A provider
 * failure marks the row 'failed' (credential.fail) after cleaning up anything the backend may have
 * created; a lost commit or a revocation that raced the issue revokes the fresh credential at once.
 */
import type { Broker } from '../broker.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { CordonError } from '../errors.ts';
import { newId } from '../ids.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { covers, parseScope } from '../policy/scopes.ts';
import type { CredentialSpec } from '../policy/types.ts';
import { type CredentialState, credentials } from '../store/credentials.ts';
import type { CredentialOutcome } from '../store/issuance-writer.ts';
import { driverMessage, transact } from '../store/db.ts';
import { ENABLING_VARIABLE } from '../providers/index.ts';
import type { CredentialProvider, Handle, IssueRequest, RevokeResult } from '../providers/provider.ts';
import { isProviderError } from '../providers/provider.ts';
import { recordBackendError } from '../observability/metrics.ts';
import { audiencesOf, type AccessTokenClaims } from '../tokens/claims.ts';
import { requireDpopForToken } from '../tokens/dpop.ts';
import type { Attempt } from '../audit/attempt.ts';
import type { TokenView } from '../tokens/verify.ts';
import { deliversToGateway, gatewayOnlyRefusal } from './deliver.ts';
import { revokeCtx, revokeRows, target } from './revoke.ts';
import { issueGatewayKeys } from './gateway-keys.ts';

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
  // Liveness from the broker's cache: the database is read for a token string not seen live before.
  const live = await b.live.require(req.jwt, 'invalid_token', (presented) => {
    // Signed by this broker: a refusal from here on names its agent, so a replayed revoked token is
    // written one by one, never summarised as junk.
    attempt.by(presented.client_id).in(presented.sid, presented.jti);
  });
  // From here on every decision reads the token as the broker recorded it.
  const { claims, view, chain } = live;
  attempt.by(claims.client_id, chain).in(claims.sid, claims.jti);
  // A token made for a resource server is not for the broker: that server (or whoever read the
  // token there) must not be able to trade it for backend credentials (RFC 8707 audience restriction).
  if (!audiencesOf(claims).includes(b.config.issuer)) {
    throw new CordonError(
      'invalid_token',
      `the token's audience does not include this broker (${b.config.issuer}); ask for a token with the broker among its audiences`,
      { reason: 'audience_not_broker' },
    );
  }

  await checkDpop(b, req, view);
  // An aws-sts credential the gateway injects: the agent gets gateway keys, never the STS keys.
  const gatewayKeys = await issueGatewayKeys(b, req.name, claims, view, chain);
  if (gatewayKeys) return gatewayKeys;
  return (await issueForRecord(b, req.name, claims, view, chain, attempt, 'agent')).response;
}

/**
 * The issue itself, for a token whose record was checked (live, and presented as it must be):
 * `/credentials` after its HTTP checks, and the gateway for the credential it injects. Returns the
 * answer and the credential's id (audit rows name it; its value never).
 */
export async function issueForRecord(
  b: Broker,
  name: string,
  claims: AccessTokenClaims,
  view: TokenView,
  chain: string[],
  attempt: Attempt,
  via: Via,
): Promise<{ response: CredentialResponse; credentialId: string }> {
  const req = { name };
  const { provider, spec, ireq } = decide(b, req.name, claims, view, via);
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
    if (!(await b.issuance.checkpointCredential(ireq.credentialId, h)))
      throw new CordonError('temporarily_unavailable', 'the credential request took too long and was rolled back; try again', { reason: 'intent_claimed' });
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
        ...(live
          ? {}
          : { reason: 'issued at the backend while the token was being revoked (or an agent of its chain disabled): revoked at once, not returned' }),
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
    const failure = new CordonError('temporarily_unavailable', 'the broker could not record the credential, so it was revoked at the backend; try again', {
      reason: 'record_failed',
      cause: e,
    });
    // The record may have committed after all (a lost reply): then it is revoked like any issued credential, with its audit row.
    const row = await credentials.get(b.db, ireq.credentialId).catch(() => undefined);
    if (row?.state === 'issued')
      await revokeRows(b, [row], {
        scope: 'token',
        claim: 'issued',
        why: 'the broker could not confirm its record, so the credential was not handed out',
      }).catch(() => undefined);
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
    if (row)
      await revokeRows(b, [row], {
        scope: 'token',
        claim: 'issued',
        why: 'the token was revoked (or an agent of its chain disabled) while the credential was being issued',
      });
    attempt.note({ credential_id: ireq.credentialId });
    throw new CordonError(
      'invalid_token',
      'the token was revoked (or an agent of its chain disabled) while the credential was being issued; the credential has been revoked',
      { reason: 'token_revoked_during_issue' },
    );
  }
  for (const f of b.hooks.onDecision) f(EVENT, 'allow', null);
  const response: CredentialResponse = {
    name: req.name,
    provider: spec.provider,
    expires_at: new Date(result.expiresAt).toISOString(),
    ...(result.leaseId ? { lease_id: result.leaseId } : {}),
    credentials: result.credentials,
    ...(result.static ? { static: true as const } : {}),
  };
  return { response, credentialId: ireq.credentialId };
}

/** Who receives the credential: the agent (`/credentials`), or the gateway, which injects it into a call it authorised. */
export type Via = 'agent' | 'gateway';

interface Decided {
  provider: CredentialProvider;
  spec: CredentialSpec;
  ireq: IssueRequest;
}

/** Every bound, checked in order, each refusal naming what failed. No writes. */
function decide(b: Broker, name: string, claims: AccessTokenClaims, view: TokenView, via: Via): Decided {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name))
    throw new CordonError('invalid_request', `credential name must match ${NAME_PATTERN.source}`, { reason: 'credential_name_malformed' });
  const held = parseScope(view.scope);
  // At the gateway the call was authorised by a gw: scope on an upstream of the root policy, which names this credential.
  if (via === 'agent' && !covers(held, `cred:${name}`))
    throw new CordonError('insufficient_scope', `token scope does not grant cred:${name}`, { reason: 'cred_not_in_scope' });
  // The session's root agent and its policy define what credentials exist in this session (the
  // token view read them with the token: requireActiveToken has refused an inactive root already).
  const policy = b.policies.get(view.rootPolicy);
  if (!policy) throw new CordonError('insufficient_scope', `the session's root policy "${view.rootPolicy}" is not loaded`, { reason: 'policy_missing' });
  const spec = Object.hasOwn(policy.credentials, name) ? policy.credentials[name] : undefined;
  if (!spec)
    throw new CordonError('insufficient_scope', `policy ${policy.name} (the session's root policy) defines no credential ${name}`, {
      reason: 'cred_not_defined',
    });
  // Gateway-only credentials never reach an agent (an aws-sts one answered gateway keys before this).
  if (via === 'agent' && deliversToGateway(spec)) throw gatewayOnlyRefusal(name, policy, b.config.gatewayUrl);
  const provider = b.providers.get(spec.provider);
  if (!provider)
    throw new CordonError(
      'temporarily_unavailable',
      `the ${spec.provider} provider is not configured on this broker (${ENABLING_VARIABLE[spec.provider]} is unset), so credential ${name} cannot be issued`,
      { reason: `${spec.provider}_off` },
    );
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
    if (req.scheme === 'DPoP')
      throw new CordonError('invalid_token', 'token is not DPoP-bound: present it as Authorization: Bearer', { reason: 'dpop_unbound' });
    return;
  }
  // RFC 9449 §7.1: a bound token presented as a bearer token is refused outright (scheme unknown: the proof decides).
  if (req.scheme === 'Bearer')
    throw new CordonError('invalid_token', 'token is DPoP-bound: present it as Authorization: DPoP with a DPoP proof', { reason: 'dpop_scheme' });
  try {
    // The record is the truth for the binding (it matched the claims when minted).
    await requireDpopForToken(b, { claims: { cnf: { jkt: view.cnfJkt } }, proof: req.dpopProof, method: req.method, url: req.url, accessToken: req.jwt });
  } catch (e) {
    if (e instanceof CordonError && e.code === 'invalid_dpop_proof')
      throw new CordonError('invalid_dpop_proof', e.description, { reason: e.reason, status: 401 });
    throw e;
  }
}

/**
 * The provider failed. Whatever the backend may have created is cleaned up: a checkpointed handle
 * names it. The row ends 'failed' (nothing issued, or everything cleaned) or 'revoke_failed'
 * (cleanup pending: the sweeper retries until it succeeds or the credential has expired).
 */
async function failIssue(
  b: Broker,
  provider: CredentialProvider,
  ireq: IssueRequest,
  expiresAtMax: number,
  handle: Handle | null,
  err: unknown,
  chain: string[],
  attempt: Attempt,
): Promise<void> {
  const desc = err instanceof CordonError ? err.description : 'unexpected provider failure';
  const reason = err instanceof CordonError ? err.reason : `${provider.name}_error`;
  if (isProviderError(err)) recordBackendError(b, err.provider, err.kind);
  else if (!(err instanceof CordonError)) recordBackendError(b, provider.name, 'unexpected');
  let state: CredentialState = 'failed';
  let note = `not issued: ${desc}`;
  // STS checkpoints names before the call (nothing exists yet unless the answer was lost); Vault checkpoints a parent that exists.
  const maybeExists =
    handle !== null && (handle.kind !== 'sts' || !isProviderError(err) || err.kind === 'timeout' || err.kind === 'bad_answer' || err.kind === 'down');
  if (maybeExists) {
    let r: RevokeResult | undefined;
    try {
      [r] = await provider.revoke(
        [{ id: ireq.credentialId, sid: ireq.session.sid, jti: ireq.claims.jti, handle, expiresAt: expiresAtMax }],
        revokeCtx(b, 'orphan'),
      );
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
    await transact(b.db, async (tx) => {
      const changed =
        state === 'failed'
          ? await credentials.markFailed(tx, ireq.credentialId, note)
          : await credentials.markRevokeFailed(tx, ireq.credentialId, b.clock.now(), note);
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
    b.log.error(
      { err: (e as Error).message, credential: ireq.credentialId },
      'could not record a failed credential issue; orphan recovery will resolve the intent',
    );
  }
  attempt.note({ credential_id: ireq.credentialId, state });
}
