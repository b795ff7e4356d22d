/**
 * Every backend credential the soak's agents were handed, and when each should have died: at its
 * own expiry, or earlier when its token or session was revoked. Some time after that (the
 * after-commit revocation hook, or at worst two sweeps) the doubles are asked whether it is dead,
 * and for a revocation whether it was revoked (not merely expired): a Vault token or lease must be
 * in state `revoked`, an STS credential denied by the role's IAM policy while it would still live.
 */
import type { VaultDouble } from '../../test/doubles/vault.ts';
import type { StsDouble } from '../../test/doubles/sts.ts';
import { GET_REPORT } from './setup.ts';

export type CredKind = 'vault-token' | 'vault-lease' | 'sts';

interface Issued {
  kind: CredKind;
  /** Vault token accessor, lease id, or STS access key id (never the secret). */
  ref: string;
  expiresAt: number;
  sid: string;
  jti: string;
}

export interface CheckTally {
  checked: number;
  revoked: number;
  expired: number;
  byKind: Record<CredKind, number>;
}

export class Ledger {
  #issued: Issued[] = [];
  readonly #sessionEnd = new Map<string, number>();
  readonly #revokedAt = new Map<string, number>();
  readonly tally: CheckTally = { checked: 0, revoked: 0, expired: 0, byKind: { 'vault-token': 0, 'vault-lease': 0, sts: 0 } };

  constructor(
    private readonly vault: VaultDouble,
    private readonly sts: StsDouble,
    /** How long after a credential's death the doubles must say so (hook or sweeper). */
    private readonly delayMs: number,
  ) {}

  session(sid: string, expiresAt: number): void {
    this.#sessionEnd.set(sid, expiresAt);
  }
  /** A session (its sid) or a token (its jti) revoked at `at`: what it holds dies then. */
  revoked(id: string, at: number): void {
    if (!this.#revokedAt.has(id)) this.#revokedAt.set(id, at);
  }
  issued(c: Issued): void {
    this.#issued.push(c);
  }
  get pending(): number {
    return this.#issued.length;
  }

  /** When `c` should be dead, and whether by revocation (then it must have been revoked, not left to expire). */
  #death(c: Issued): { at: number; byRevocation: boolean } {
    const revokedAt = Math.min(this.#revokedAt.get(c.sid) ?? Infinity, this.#revokedAt.get(c.jti) ?? Infinity);
    const at = Math.min(c.expiresAt, revokedAt, this.#sessionEnd.get(c.sid) ?? Infinity);
    // Revoked clearly before it would have expired anyway (2 s of slack for the request in flight).
    return { at, byRevocation: revokedAt < c.expiresAt - 2000 };
  }

  /** Checks every credential dead for `delayMs` by now; returns the problems found. Checked ones are forgotten. */
  check(now = Date.now()): string[] {
    const problems: string[] = [];
    const keep: Issued[] = [];
    for (const c of this.#issued) {
      const d = this.#death(c);
      if (d.at + this.delayMs > now) {
        keep.push(c);
        continue;
      }
      const p = this.#checkOne(c, d.byRevocation, now);
      if (p) problems.push(`${c.kind} ${c.ref} of session ${c.sid}: ${p}`);
      this.tally.checked++;
      this.tally.byKind[c.kind]++;
      if (d.byRevocation) this.tally.revoked++;
      else this.tally.expired++;
    }
    this.#issued = keep;
    // Sessions and tokens no credential refers to any more are forgotten too.
    const live = new Set(keep.flatMap((c) => [c.sid, c.jti]));
    for (const k of this.#revokedAt.keys()) if (!live.has(k)) this.#revokedAt.delete(k);
    for (const k of this.#sessionEnd.keys()) if (!live.has(k)) this.#sessionEnd.delete(k);
    return problems;
  }

  #checkOne(c: Issued, byRevocation: boolean, now: number): string | undefined {
    if (c.kind === 'sts') {
      if (byRevocation && c.expiresAt > now)
        return this.sts.isCredentialDenied(c.ref, GET_REPORT) ? undefined : 'revoked but not denied by IAM at the STS double';
      return this.sts.isCredentialUsable(c.ref, GET_REPORT) ? 'still usable at the STS double after its session ended' : undefined;
    }
    const info = c.kind === 'vault-token' ? this.vault.getToken(c.ref) : this.vault.getLease(c.ref);
    if (!info) return 'unknown to the Vault double';
    if (info.state === 'active') return 'still active at the Vault double';
    if (byRevocation && info.state !== 'revoked') return `${info.state} at the Vault double, not revoked`;
    return undefined;
  }
}
