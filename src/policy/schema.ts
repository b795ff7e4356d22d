/**
 * The shape of one policy file, as zod schemas. Objects are strict: an unknown key is far
 * more often a typo of a restriction (`sesion_ttl`) than a harmless extra, and a typo'd
 * restriction silently falls back to a default. Checks that relate one field to another
 * (ttl ordering, delegation ⊆ scopes, cred: scopes ↔ credentials) live in lint.ts.
 */
import { z } from 'zod';
import { parseDuration } from './duration.ts';
import { CRED_PREFIX, isScopeToken, isWildcard } from './scopes.ts';
import { SessionPolicyError, SIZE_PROBE_MS, timeBoundSessionPolicy } from './session-policy.ts';

/** Policy and credential names: they end up in URLs (`/credentials/:name`), session tags and audit rows. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const MAX_DELEGATION_DEPTH = 16;
/** AWS limits: plaintext inline session policy ≤ 2048 chars, ≤ 10 managed policy ARNs, DurationSeconds ≤ 43200. */
export const MAX_SESSION_POLICY_CHARS = 2048;
export const MAX_POLICY_ARNS = 10;
export const MAX_STS_TTL = 43_200;
export const ALLOW_OVERHANG_REMOVED =
  "allow_overhang was removed: a credential may no longer outlive the token that asked for it. Its session policy ends it at the token's expiry, even where STS issues it for longer (900 s at least); delete this key";

const ROLE_ARN = /^arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role\/(?:[\w+=,.@-]+\/)*[\w+=,.@-]{1,64}$/;
const POLICY_ARN = /^arn:aws(?:-cn|-us-gov)?:iam::(?:\d{12}|aws):policy\/(?:[\w+=,.@-]+\/)*[\w+=,.@-]{1,128}$/;
const EXTERNAL_ID = /^[\w+=,.@:/-]{2,1224}$/;
/** Vault API path segment; `.`/`..`, `?`, `#` and spaces are out because the path is spliced into `/v1/<path>`. */
const VAULT_SEGMENT = /^[A-Za-z0-9_@+=:-][A-Za-z0-9_.@+=:-]*$/;

export const durationSchema = z.unknown().transform((v, ctx): number => {
  if (typeof v !== 'string' && typeof v !== 'number') {
    ctx.addIssue({ code: 'custom', message: 'must be a duration such as 30s, 10m, 1h30m or 2d' });
    return z.NEVER;
  }
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

/** A scope as written in a policy: a valid token, not the lone `*`, and no wildcard reaching into `cred:`. */
export const policyScopeSchema = z.string().superRefine((s, ctx) => {
  if (!isScopeToken(s)) {
    ctx.addIssue({ code: 'custom', message: `invalid scope token ${JSON.stringify(s)} (printable ASCII, no spaces, quotes or backslashes)` });
  } else if (s === '*') {
    ctx.addIssue({ code: 'custom', message: 'scope "*" is too broad; list the scopes (a prefix wildcard such as tickets:* is fine)' });
  } else if (isWildcard(s)) {
    // A wildcard over cred: would grant credentials nobody named; each credential must be granted by name.
    const prefix = s.slice(0, -1);
    if (CRED_PREFIX.startsWith(prefix) || prefix.startsWith(CRED_PREFIX)) {
      ctx.addIssue({ code: 'custom', message: `wildcard ${JSON.stringify(s)} reaches cred: scopes; grant each credential as cred:NAME` });
    }
  }
});

const vaultPathSchema = z.string().refine((p) => {
  const segs = p.split('/');
  return segs.length >= 2 && segs.every((s) => VAULT_SEGMENT.test(s) && s !== '.' && s !== '..');
}, 'must be a Vault API path such as database/creds/NAME (no leading slash, no empty, . or .. segments)');

const vaultPolicyName = z
  .string()
  .regex(/^[A-Za-z0-9_.@:/-]+$/, 'must be a Vault policy name')
  // Vault lowercases policy names; a child token carrying root would be the whole Vault.
  .refine((p) => p.toLowerCase() !== 'root', 'the Vault root policy may not be handed to agents');

/** `gateway`: only the gateway ever holds the credential (it injects it into calls); `/credentials` refuses it. */
const deliverSchema = z.enum(['agent', 'gateway']);

export const vaultCredentialSchema = z
  .strictObject({
    provider: z.literal('vault'),
    // Required but for kv, whose ttl is only how long the gateway may cache the secret (DEFAULT_KV_TTL when left out).
    ttl: durationSchema.optional(),
    vault_policies: z.array(vaultPolicyName).min(1, 'must list at least one Vault policy').optional(),
    default_policy: z.boolean().optional(),
    path: vaultPathSchema.optional(),
    num_uses: z.number().int('must be a whole number').min(1, 'must be at least 1').optional(),
    explicit_max_ttl: durationSchema.optional(),
    kv_path: vaultPathSchema.optional(),
    kv: vaultPathSchema.optional(),
    deliver: deliverSchema.optional(),
  })
  .superRefine((c, ctx) => {
    const has = (c.vault_policies !== undefined ? 1 : 0) + (c.path !== undefined ? 1 : 0) + (c.kv !== undefined ? 1 : 0);
    if (has !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          has === 0
            ? 'a vault credential needs vault_policies (child token), path (secret read) or kv (a KV v2 secret for the gateway)'
            : 'a vault credential takes one of vault_policies, path or kv',
        path: has === 0 ? [] : [c.kv !== undefined ? 'kv' : 'path'],
      });
    }
    if (c.ttl === undefined && c.kv === undefined) ctx.addIssue({ code: 'custom', message: 'is required', path: ['ttl'] });
    // A secret read hands out no token: there is no policy to add `default` to.
    if (c.default_policy !== undefined && c.vault_policies === undefined) {
      ctx.addIssue({ code: 'custom', message: 'applies only with vault_policies (a child token), not to a path read', path: ['default_policy'] });
    }
  });

export const awsStsCredentialSchema = z.strictObject({
  provider: z.literal('aws-sts'),
  ttl: durationSchema.refine((t) => t <= MAX_STS_TTL, `must be at most 12h (${MAX_STS_TTL}s), the STS maximum`),
  role_arn: z.string().regex(ROLE_ARN, 'must look like arn:aws:iam::123456789012:role/NAME'),
  // Measured as sent: Cordon adds its time bound to every Allow statement (see session-policy.ts).
  session_policy: z
    .record(z.string(), z.unknown())
    .superRefine((p, ctx) => {
      let sent: number;
      try {
        sent = JSON.stringify(timeBoundSessionPolicy(p, SIZE_PROBE_MS)).length;
      } catch (e) {
        if (!(e instanceof SessionPolicyError)) throw e;
        ctx.addIssue({ code: 'custom', message: e.message });
        return;
      }
      if (sent > MAX_SESSION_POLICY_CHARS)
        ctx.addIssue({
          code: 'custom',
          message: `is longer than ${MAX_SESSION_POLICY_CHARS} characters (the STS limit) as sent: ${sent} as compact JSON once Cordon adds its time bound (a DateLessThan aws:CurrentTime condition, the token's expiry) to each Allow statement (${sent - JSON.stringify(p).length} characters here)`,
        });
    })
    .optional(),
  policy_arns: z
    .array(z.string().regex(POLICY_ARN, 'must look like arn:aws:iam::123456789012:policy/NAME'))
    .max(MAX_POLICY_ARNS, `may list at most ${MAX_POLICY_ARNS} policy ARNs (the STS limit)`)
    .optional(),
  external_id: z.string().regex(EXTERNAL_ID, 'must be 2-1224 characters of [A-Za-z0-9+=,.@:/_-]').optional(),
  // Removed: refused with the reason, rather than as an unknown key.
  allow_overhang: z
    .unknown()
    .superRefine((_, ctx) => ctx.addIssue({ code: 'custom', message: ALLOW_OVERHANG_REMOVED }))
    .optional(),
  revoke_via_iam: z.boolean().optional(),
  deliver: deliverSchema.optional(),
});

export const credentialSchema = z.discriminatedUnion('provider', [vaultCredentialSchema, awsStsCredentialSchema]);

const jwksUri = z.string().refine((u) => {
  try {
    const url = new URL(u);
    // JWKS over plain HTTP lets anyone on the path mint identities; allow it only on loopback (tests, sidecars).
    return url.protocol === 'https:' || (url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname));
  } catch {
    return false;
  }
}, 'must be an https:// URL (http:// only on loopback)');

/** neither/both of jwks_uri / jwks_file is checked in lint.ts so it can point at the rule. */
export const federationRuleSchema = z.strictObject({
  issuer: z.string().min(1, 'must not be empty'),
  jwks_uri: jwksUri.optional(),
  jwks_file: z.string().min(1, 'must not be empty').optional(),
  audience: z.string().min(1, 'must not be empty'),
  claim: z.string().min(1, 'must not be empty').default('sub'),
  match: z.string().min(1, 'must not be empty'),
  single_use: z.boolean().default(false),
});

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
/** A path glob: absolute, `*` one segment, `**` the rest (last only); no dot segments, no encoded characters. */
const pathGlobSchema = z.string().refine(
  (p) =>
    p.startsWith('/') &&
    !/[%?#\s\\]/.test(p) &&
    p
      .split('/')
      .slice(1)
      .every((seg, i, all) => seg !== '.' && seg !== '..' && (seg !== '**' || i === all.length - 1)),
  'must be an absolute path glob such as /tickets/* or /files/** (no ., .., %, ? or #; ** only last)',
);

export const upstreamRuleSchema = z.strictObject({
  methods: z.array(z.enum(HTTP_METHODS, { message: `must be one of ${HTTP_METHODS.join(', ')}` })).min(1, 'must list at least one method'),
  paths: z.array(pathGlobSchema).min(1, 'must list at least one path'),
});

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const TEMPLATE = /^(?:[^{}]|\{(?:token|secret\.[A-Za-z0-9_.-]+)\})*$/;
const templateSchema = z.string().regex(TEMPLATE, 'must be text with {secret.FIELD} or {token} placeholders');

export const injectionSchema = z.union([
  z.strictObject({
    header: z
      .string()
      .regex(HEADER_NAME, 'must be an HTTP header name')
      .refine(
        (h) => !/^(host|content-length|transfer-encoding|connection|upgrade|te|trailer|proxy-.*|x-amz-.*)$/i.test(h),
        'may not be a framing, proxy or X-Amz header',
      ),
    value: templateSchema,
  }),
  z.strictObject({ query: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be a query parameter name'), value: templateSchema }),
  z.strictObject({
    aws_sigv4: z.strictObject({
      service: z.string().regex(/^[a-z0-9-]{1,32}$/, 'must be an AWS service name such as s3'),
      region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region such as us-east-1'),
    }),
  }),
]);

const upstreamUrl = z.string().refine((u) => {
  try {
    const url = new URL(u);
    return (url.protocol === 'https:' || url.protocol === 'http:') && !url.username && !url.password && !url.search && !url.hash;
  } catch {
    return false;
  }
}, 'must be an http(s) URL without credentials, query or fragment');

const argGlobs = z.record(z.string(), z.record(z.string(), z.string()));

export const upstreamSchema = z.strictObject({
  kind: z.enum(['http', 'mcp']).default('http'),
  url: upstreamUrl,
  credential: z.string().optional(),
  inject: injectionSchema.optional(),
  rules: z.record(z.string().regex(NAME_PATTERN, 'rule names are lowercase letters, digits, . _ -'), upstreamRuleSchema).default({}),
  timeout: durationSchema.default(30),
  max_body: z
    .number()
    .int('must be a whole number of bytes')
    .min(0)
    .max(1 << 30)
    .default(1 << 20),
  tools: z.array(z.string().min(1)).optional(),
  args: argGlobs.optional(),
  resources: z.array(z.string().min(1)).optional(),
  prompts: z.array(z.string().min(1)).optional(),
  audit_args: z.enum(['names', 'full']).optional(),
});

const EGRESS_HOST = /^(?:\*\.)?[A-Za-z0-9.-]+$|^\[[0-9a-fA-F:.]+\]$|^[0-9a-fA-F:]+$/;

export const egressRuleSchema = z.strictObject({
  host: z
    .string()
    .superRefine((h, ctx) => {
      if (h === '*' || h === '*.')
        ctx.addIssue({ code: 'custom', message: `${JSON.stringify(h)} would let the agent reach any host; list the hosts (a *.domain suffix is fine)` });
      else if (!EGRESS_HOST.test(h)) ctx.addIssue({ code: 'custom', message: 'must be a host name, *.domain, or an IP address' });
    })
    .transform((h) => h.toLowerCase().replace(/^\[(.*)\]$/, '$1')),
  ports: z.array(z.number().int().min(1).max(65535)).min(1, 'must list at least one port').default([443]),
});

export const limitsSchema = z.strictObject({
  calls_per_minute: z.number().int('must be a whole number').min(1, 'must be at least 1').optional(),
  on_denials: z
    .strictObject({
      count: z.number().int('must be a whole number').min(1, 'must be at least 1'),
      within: durationSchema,
      then: z.enum(['revoke_session']).optional(),
    })
    .optional(),
});

export const policyFileSchema = z.strictObject({
  name: z.string(),
  description: z.string().default(''),
  token_ttl: durationSchema.optional(),
  session_ttl: durationSchema.optional(),
  scopes: z.array(policyScopeSchema),
  audiences: z.array(z.string().regex(/^\S+$/, 'must be a non-empty string without spaces')).default([]),
  delegation: z
    .strictObject({
      max_depth: z
        .number()
        .int('must be a whole number')
        .min(0, `must be between 0 and ${MAX_DELEGATION_DEPTH}`)
        .max(MAX_DELEGATION_DEPTH, `must be between 0 and ${MAX_DELEGATION_DEPTH}`)
        .default(0),
      scopes: z.array(policyScopeSchema).default([]),
    })
    .default({ max_depth: 0, scopes: [] }),
  credentials: z.record(z.string(), credentialSchema).default({}),
  require_dpop: z.boolean().default(false),
  federation: z.array(federationRuleSchema).default([]),
  upstreams: z.record(z.string().regex(NAME_PATTERN, 'upstream names are lowercase letters, digits, . _ -'), upstreamSchema).default({}),
  egress: z.array(egressRuleSchema).default([]),
  limits: limitsSchema.default({}),
});

export type PolicyFile = z.output<typeof policyFileSchema>;

export const DEFAULT_TOKEN_TTL = 600;
export const DEFAULT_SESSION_TTL = 3600;
/** How long the gateway may cache a kv secret when its credential gives no ttl (capped by session_ttl). */
export const DEFAULT_KV_TTL = 300;
