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
      /** KV v2 read (`secret/data/NAME`): a static third-party secret, only ever `deliver: gateway`; `ttl` (default 5m) is how long the gateway may cache it. */
      kv?: string;
      deliver?: Deliver;
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
      /** `gateway`: the agent never receives the STS keys; `/credentials` answers gateway keys instead. */
      deliver?: Deliver;
    };

/** Who receives a credential: the agent (`/credentials`), or only the gateway, which injects it. */
export type Deliver = 'agent' | 'gateway';

/** One rule of an upstream: the methods and path globs it allows (`*` one segment, `**` any rest). */
export interface UpstreamRule {
  methods: string[];
  paths: string[];
}

/** How the gateway puts the upstream's credential into a call. Templates: `{secret.FIELD}`, `{token}`. */
export type Injection = { header: string; value: string } | { query: string; value: string } | { aws_sigv4: { service: string; region: string } };

/** An upstream reached through the gateway (`/u/NAME/…`, scope `gw:NAME` or `gw:NAME/RULE`). */
export interface Upstream {
  kind: 'http' | 'mcp';
  /** Base URL: the call's path is appended to its path. */
  url: string;
  /** A credential the same policy defines. Lint requires it (with `inject`): optional here only as the schema reads it. */
  credential?: string;
  inject?: Injection;
  rules: Record<string, UpstreamRule>;
  /** Seconds to wait for the upstream's response headers (and between body chunks). Default 30. */
  timeoutSec: number;
  /** Request body cap, bytes. Default 1 MiB. */
  maxBodyBytes: number;
  /** MCP (kind: mcp): the tools the policy grants, and argument globs per tool. */
  tools?: string[];
  args?: Record<string, Record<string, string>>;
  resources?: string[];
  prompts?: string[];
  auditArgs?: 'names' | 'full';
}

/** A forward-proxy destination: a host name (or `*.suffix`) or an IP literal, and its ports. */
export interface EgressRule {
  host: string;
  ports: number[];
}

/** Per-session call limits at the gateway and what a burst of refusals sets off. */
export interface Limits {
  callsPerMinute?: number;
  onDenials?: { count: number; withinSec: number; then?: 'revoke_session' };
}

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
  /** Reached through the gateway: the session root's definitions govern, like credentials. */
  upstreams: Record<string, Upstream>;
  /** Forward-proxy allowlist; every policy along a token's chain must allow a destination. */
  egress: EgressRule[];
  limits: Limits;
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
