/**
 * Revoking backend credentials: after a revocation commits (`b.hooks.onRevoked`: revoked sessions
 * and tokens) and from the sweeper (ended sessions, retries, orphans). Rows are claimed with
 * conditional UPDATEs first, so concurrent revokers (hook, sweeper, other replicas) never double-act.
 */
import type { Broker } from '../broker.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { transact } from '../store/db.ts';
import { type CredentialRow, type CredentialState, credentials } from '../store/credentials.ts';
import { denyEntriesOf, iamDenies } from '../store/iam-denies.ts';
import type { Providers } from '../providers/index.ts';
import type { DenyHooks, DenyRecord, Handle, ReconcileContext, RevokeContext, RevokeResult, RevokeTarget } from '../providers/provider.ts';
import { isProviderError } from '../providers/provider.ts';
import { recordBackendError } from '../observability/metrics.ts';

/**
 * Attaches providers to a broker and makes revocations reach the backends. Returns a function
 * that detaches them again (runtime stop, tests).
 */
export function attachProviders(b: Broker, providers: Providers): () => void {
  for (const [name, p] of providers) b.providers.set(name, p);
  const hook = (r: { sids: string[]; jtis: string[] }): Promise<void> => revokeBackendCredentials(b, r).then(() => undefined);
  b.hooks.onRevoked.push(hook);
  return () => {
    const i = b.hooks.onRevoked.indexOf(hook);
    if (i >= 0) b.hooks.onRevoked.splice(i, 1);
    for (const [name, p] of providers) if (b.providers.get(name) === p) b.providers.delete(name);
  };
}

export const target = (id: string, v: { sid: string; jti: string }, handle: Handle | null, expiresAt: number): RevokeTarget => ({
  id,
  sid: v.sid,
  jti: v.jti,
  handle,
  expiresAt,
});

export function revokeCtx(b: Broker, scope: RevokeContext['scope']): RevokeContext {
  return { now: b.clock.now(), scope, ...denyHooks(b, scope) };
}

/** The database side of IAM deny entries, for a revocation (its scope). */
function denyHooks(b: Broker, scope: RevokeContext['scope']): DenyHooks {
  return {
    recordDeny: (entries) =>
      transact(b.db, async (tx) => {
        const at = b.clock.now();
        const bySid = new Map<string, DenyRecord[]>();
        for (const d of entries) {
          await iamDenies.insert(tx, {
            id: d.id,
            roleArn: d.roleArn,
            policyName: d.policyName,
            sid: d.sid,
            kind: d.kind,
            subject: d.subject,
            revokedAt: d.revokedAt,
            createdAt: at,
            removeAfter: d.removeAfter,
          });
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
            await iamDenies.markRemovedMany(
              tx,
              withdraw.map((r) => r.id),
              at,
            );
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
    const provider = b.providers.get(name as never);
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
      await transact(b.db, async (tx) => {
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
function settle(
  r: CredentialRow,
  res: RevokeResult,
  orphan: boolean,
  now: number,
  scope: RevokeContext['scope'],
): { state: CredentialState; at: number | null; decision: 'allow' | 'info'; text: string } {
  const until = new Date(r.expiresAt).toISOString();
  switch (res.outcome) {
    case 'revoked':
      return { state: 'revoked', at: now, decision: 'allow', text: orphan ? `orphan (backend answer lost) revoked: ${res.note}` : res.note };
    case 'expired':
      return orphan
        ? { state: 'failed', at: null, decision: 'info', text: `orphan: anything issued expired at ${until}` }
        : { state: 'revoked', at: now, decision: 'info', text: res.note };
    case 'not_revocable':
      // Alive until expiry, and listed so: an issued row with revoked_at set.
      return orphan
        ? {
            state: 'failed',
            at: null,
            decision: 'info',
            text: `orphan: the broker lost the backend's answer; if it issued, the credential is valid until ${until} (${res.note})`,
          }
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

/** The database side of a provider's reconcile (ReconcileContext): deny records as committed, their removal audited. */
export function reconcileCtx(b: Broker): ReconcileContext {
  const removedRow = (at: number, sid: string, params: Record<string, unknown>) => ({
    at,
    event: 'credential.iam_deny_removed' as const,
    decision: 'info' as const,
    sid,
    reason: 'every credential the deny covered has expired',
    params,
  });
  return {
    dueLegacyDenies: () => iamDenies.dueLegacy(b.db, b.clock.now(), 100),
    async legacyDenyRemoved(id) {
      await transact(b.db, async (tx) => {
        const rows = await iamDenies.byIds(tx, [id]);
        if (!rows.length || !(await iamDenies.markRemoved(tx, id, b.clock.now()))) return;
        await appendAudit(tx, removedRow(b.clock.now(), rows[0].sid, { role_arn: rows[0].roleArn, policy_name: rows[0].policyName }));
      });
    },
    deniedRoles: () => iamDenies.rolesWithEntries(b.db),
    rebuildRole: (roleArn, apply) =>
      iamDenies.withRole(b.db, roleArn, async (q, rows) => {
        const at = b.clock.now();
        const due = rows.filter((r) => r.removeAfter <= at);
        const keep = rows.filter((r) => r.removeAfter > at);
        const res = await apply(denyEntriesOf(keep));
        if (res.omitted.length)
          b.log.warn(
            { role: roleArn, omitted: res.omitted.length },
            'IAM revocation entries do not fit in the role policy; their revocations stay failed and are retried',
          );
        if (!due.length) return 0;
        // Only after the backend took the smaller policy: if the call failed, the entries stay and the next sweep tries again.
        return q.transaction(async (tx) => {
          const n = await iamDenies.markRemovedMany(
            tx,
            due.map((r) => r.id),
            at,
          );
          for (const sid of new Set(due.map((r) => r.sid))) {
            await appendAudit(
              tx,
              removedRow(at, sid, { role_arn: roleArn, policy_name: due[0].policyName, entries: due.filter((r) => r.sid === sid).map((r) => r.id) }),
            );
          }
          return n;
        });
      }),
  };
}
