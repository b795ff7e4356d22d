/** A loaded, linted policy. Durations are seconds; YAML snake_case keys become camelCase here. */

/**
 * Vault: exactly one of `vault_policies` (a child token from `auth/token/create`) or `path`
 * (a read of a dynamic or KV secret: `database/creds/x`, `aws/creds/x`, `secret/data/x`).
 * A child token holds exactly `vault_policies`; `default_policy: true` adds Vault's `default` policy.
 * AWS STS: `AssumeRole` on `role_arn`, downscoped by `session_policy` / `policy_arns`.
 */
export type CredentialSpec =
  | {
      provider: 'vault';
      ttl: number;
      vault_policies?: string[];
      default_policy?: boolean;
      path?: string;
      num_uses?: number;
      explicit_max_ttl?: number;
      kv_path?: string;
    }
  | {
      provider: 'aws-sts';
      ttl: number;
      role_arn: string;
      session_policy?: Record<string, unknown>;
      policy_arns?: string[];
      external_id?: string;
      /** Default true: a revocation ends the credential through an IAM deny (its token's expiry ends it through its session policy either way). */
      revoke_via_iam?: boolean;
    };

/** Workload identity federation: an external JWT whose `claim` equals `match` opens a session. */
export interface FederationRule {
  issuer: string;
  jwks_uri?: string;
  jwks_file?: string;
  audience: string;
  /** Claim compared, e.g. `sub`. */
  claim: string;
  /** Exact value the claim must have. */
  match: string;
  /** Each JWT (by `jti`) opens one session only: for tokens that could be replayed (user IdP tokens), not rotating workload tokens. */
  single_use: boolean;
}

export interface Policy {
  name: string;
  description: string;
  /** The file it was loaded from, for messages and audit rows. */
  file: string;
  tokenTtl: number;
  sessionTtl: number;
  scopes: string[];
  /** Audiences a token may be asked for; `[]` means none may be asked and `aud` is the broker's issuer. */
  audiences: string[];
  delegation: { maxDepth: number; scopes: string[] };
  credentials: Record<string, CredentialSpec>;
  requireDpop: boolean;
  federation: FederationRule[];
  maxTaskLength?: never;
}

export interface LintProblem {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
  message: string;
  /** Absent means error. A warning never stops the broker from loading the policies. */
  severity?: 'error' | 'warning';
}
