import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatProblem, lintPolicyDir, PolicyDirError } from '../src/policy/lint.ts';
import { loadPolicies, PolicyLintError } from '../src/policy/load.ts';
import type { LintProblem } from '../src/policy/types.ts';
import pino from 'pino';
import { openBroker, closeBroker } from '../src/broker.ts';
import { loadConfig } from '../src/config/index.ts';

const SHIPPED = fileURLToPath(new URL('../policies/', import.meta.url));

const tmpDirs: string[] = [];
async function dirWith(files: Record<string, string | Buffer>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cordon-policy-'));
  tmpDirs.push(dir);
  for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body);
  return dir;
}

/** Lint one file named p.yaml; returns its problems and the file path. */
async function lintOne(text: string) {
  const dir = await dirWith({ 'p.yaml': text });
  const r = await lintPolicyDir(dir);
  return { ...r, file: join(dir, 'p.yaml') };
}

/** Exactly one problem, at file:line[:column], whose message matches. */
function one(problems: LintProblem[], file: string, line: number, match: RegExp, column?: number): LintProblem {
  assert.equal(problems.length, 1, `expected one problem, got:\n${problems.map(formatProblem).join('\n')}`);
  const [p] = problems;
  assert.equal(p.file, file);
  assert.equal(p.line, line, formatProblem(p));
  if (column !== undefined) assert.equal(p.column, column, formatProblem(p));
  assert.match(p.message, match);
  return p;
}

// A valid policy; tests append or substitute lines and assert the line numbers that follow.
const BASE = `name: base
scopes: [tickets:read, cred:db]
credentials:
  db: { provider: vault, path: database/creds/ro, ttl: 10m }
`;

describe('policy/lint', () => {
  after(async () => {
    for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
  });

  describe('the shipped policies/', () => {
    it('lint clean', async () => {
      const { policies, problems } = await lintPolicyDir(SHIPPED);
      assert.deepEqual(problems.map(formatProblem), []);
      assert.deepEqual(
        policies.map((p) => p.name),
        ['doc-reader', 'research-planner', 'support-summarizer'],
      );
    });

    it('load with the values DESIGN.md describes', async () => {
      const set = await loadPolicies(SHIPPED);
      const s = set.get('support-summarizer')!;
      assert.equal(s.tokenTtl, 600);
      assert.equal(s.sessionTtl, 3600);
      assert.deepEqual(s.audiences, ['https://tickets.internal']);
      assert.deepEqual(s.delegation, { maxDepth: 1, scopes: ['tickets:read'] });
      assert.deepEqual(s.credentials['tickets-vault'], { provider: 'vault', vault_policies: ['tickets-read'], ttl: 600 });
      assert.deepEqual(s.credentials['tickets-db'], { provider: 'vault', path: 'database/creds/tickets-ro', ttl: 600 });
      const s3 = s.credentials['reports-s3'];
      assert.equal(s3.provider, 'aws-sts');
      assert.equal(s3.ttl, 900);
      assert.equal(s.requireDpop, false);
      assert.deepEqual(s.federation, []);
      const r = set.get('research-planner')!;
      assert.deepEqual([r.tokenTtl, r.sessionTtl, r.delegation.maxDepth], [900, 7200, 2]);
      const d = set.get('doc-reader')!;
      assert.deepEqual([d.tokenTtl, d.delegation.maxDepth, d.delegation.scopes, d.credentials], [300, 0, [], {}]);
      assert.deepEqual(set.names(), ['doc-reader', 'research-planner', 'support-summarizer']);
      assert.equal(set.list().length, 3);
      assert.equal(set.get('nope'), undefined);
    });
  });

  describe('defaults and the Policy shape', () => {
    it('applies defaults and converts keys to camelCase', async () => {
      const { policies, problems } = await lintOne('name: tiny\nscopes: [a, a, b:*]\n');
      assert.deepEqual(problems, []);
      const [p] = policies;
      assert.deepEqual(
        { ...p, file: undefined },
        {
          name: 'tiny',
          description: '',
          file: undefined,
          tokenTtl: 600,
          sessionTtl: 3600,
          scopes: ['a', 'b:*'],
          audiences: [],
          delegation: { maxDepth: 0, scopes: [] },
          credentials: {},
          requireDpop: false,
          federation: [],
          upstreams: {},
          egress: [],
          limits: {},
        },
      );
    });

    it('reads require_dpop, federation (claim defaults to sub) and numeric seconds', async () => {
      const { policies, problems } = await lintOne(
        'name: fed\ntoken_ttl: 300\nscopes: [a]\nrequire_dpop: true\nfederation:\n  - { issuer: https://ci.example, jwks_uri: https://ci.example/jwks, audience: cordon, match: repo:x }\n',
      );
      assert.deepEqual(problems, []);
      assert.equal(policies[0].tokenTtl, 300);
      assert.equal(policies[0].requireDpop, true);
      assert.deepEqual(policies[0].federation, [
        { issuer: 'https://ci.example', jwks_uri: 'https://ci.example/jwks', audience: 'cordon', claim: 'sub', match: 'repo:x', single_use: false },
      ]);
    });
  });

  describe('YAML', () => {
    it('reports a syntax error with its position', async () => {
      const { file, problems } = await lintOne('name: x\nscopes: [a, b\n');
      assert.ok(problems.length >= 1);
      assert.equal(problems[0].file, file);
      assert.match(problems[0].message, /^YAML: /);
      assert.ok(problems[0].line >= 2, formatProblem(problems[0]));
    });

    it('reports (does not throw on) a file that is not text', async () => {
      const dir = await dirWith({ 'bin.yaml': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0xff, 0xfe, 0x00, 0x01]) });
      const { problems } = await lintPolicyDir(dir);
      one(problems, join(dir, 'bin.yaml'), 1, /not a YAML file/, 1);
    });

    it('reports a file that is YAML but not a mapping', async () => {
      const { file, problems } = await lintOne('# just prose\nThis is a README, not a policy.\n');
      one(problems, file, 2, /must be a YAML mapping/, 1);
    });

    it('reports an empty file', async () => {
      const { file, problems } = await lintOne('# nothing here\n');
      one(problems, file, 1, /empty policy file/);
    });

    it('refuses a second document in one file', async () => {
      const { file, problems } = await lintOne(`${BASE}---\nname: other\nscopes: []\n`);
      one(problems, file, 5, /one policy per file/, 1);
    });

    it('refuses duplicate keys rather than letting the last one win', async () => {
      const { file, problems } = await lintOne(`${BASE}token_ttl: 5m\ntoken_ttl: 50m\n`);
      one(problems, file, 6, /unique/i, 1);
    });
  });

  describe('schema rules', () => {
    it('unknown top-level key, at the key', async () => {
      const { file, problems } = await lintOne(`${BASE}sesion_ttl: 2h\n`);
      one(problems, file, 5, /unknown key "sesion_ttl"/, 1);
    });

    it('unknown nested keys, at the key', async () => {
      const { file, problems } = await lintOne(
        `name: base\nscopes: [a, cred:db]\ndelegation:\n  maxDepth: 1\ncredentials:\n  db:\n    provider: vault\n    path: database/creds/ro\n    tll: 10m\n    ttl: 1m\n`,
      );
      assert.equal(problems.length, 2, problems.map(formatProblem).join('\n'));
      assert.deepEqual([problems[0].file, problems[0].line, problems[0].column], [file, 4, 3]);
      assert.match(problems[0].message, /delegation: unknown key "maxDepth"/);
      assert.deepEqual([problems[1].line, problems[1].column], [9, 5]);
      assert.match(problems[1].message, /credentials\.db: unknown key "tll"/);
    });

    it('missing required keys point at the mapping', async () => {
      const { file, problems } = await lintOne('# c\ndescription: no name, no scopes\n');
      assert.equal(problems.length, 2);
      for (const p of problems) assert.deepEqual([p.file, p.line, p.column], [file, 2, 1]);
      assert.deepEqual(problems.map((p) => p.message).sort(), ['name: is required', 'scopes: is required']);
    });

    it('wrong types', async () => {
      const { file, problems } = await lintOne('name: base\nscopes: tickets:read\n');
      one(problems, file, 2, /scopes: must be a list/, 9);
    });

    it('bad durations, at the value', async () => {
      const { file, problems } = await lintOne(`${BASE}token_ttl: 10x\n`);
      one(problems, file, 5, /token_ttl: invalid duration "10x"/, 12);
      const zero = await lintOne(`${BASE}session_ttl: 0\n`);
      one(zero.problems, zero.file, 5, /session_ttl: .*greater than zero/);
      const float = await lintOne(`${BASE}session_ttl: "1.5h"\n`);
      one(float.problems, float.file, 5, /session_ttl: invalid duration/);
    });

    it('invalid scope tokens, the lone * and wildcards over cred:', async () => {
      const { file, problems } = await lintOne('name: base\nscopes:\n  - ok:*\n  - "*"\n  - "a b"\n  - cred:*\n  - c*\n  - \'say"hi\'\n');
      assert.deepEqual(
        problems.map((p) => [p.file, p.line, p.column]),
        [
          [file, 4, 5],
          [file, 5, 5],
          [file, 6, 5],
          [file, 7, 5],
          [file, 8, 5],
        ],
      );
      assert.match(problems[0].message, /scopes\[1\]: scope "\*" is too broad/);
      assert.match(problems[1].message, /invalid scope token "a b"/);
      assert.match(problems[2].message, /reaches cred:/);
      assert.match(problems[3].message, /reaches cred:/);
      assert.match(problems[4].message, /invalid scope token/);
    });

    it('the lone * in delegation.scopes too', async () => {
      const { file, problems } = await lintOne(`${BASE}delegation: { max_depth: 1, scopes: ["*"] }\n`);
      one(problems, file, 5, /delegation\.scopes\[0\]: scope "\*" is too broad/, 38);
    });

    for (const depth of ['17', '-1', '1.5'])
      it(`max_depth ${depth} is outside 0..16`, async () => {
        const { file, problems } = await lintOne(`${BASE}delegation:\n  max_depth: ${depth}\n`);
        one(problems, file, 6, /delegation\.max_depth: must be/, 14);
      });

    it('a credential without a provider, or with an unknown one', async () => {
      const { file, problems } = await lintOne(
        'name: base\nscopes: [cred:a, cred:b]\ncredentials:\n  a: { path: database/creds/x, ttl: 1m }\n  b: { provider: gcp, ttl: 1m }\n',
      );
      assert.equal(problems.length, 2, problems.map(formatProblem).join('\n'));
      assert.deepEqual([problems[0].file, problems[0].line], [file, 4]);
      assert.match(problems[0].message, /credentials\.a: credential needs a provider/);
      assert.deepEqual([problems[1].line, problems[1].column], [5, 18]);
      assert.match(problems[1].message, /unknown provider "gcp"/);
    });

    it('vault needs exactly one of vault_policies / path', async () => {
      const neither = await lintOne('name: base\nscopes: [cred:v]\ncredentials:\n  v: { provider: vault, ttl: 1m }\n');
      one(neither.problems, neither.file, 4, /credentials\.v: .*needs vault_policies .*, path .* or kv/);
      const both = await lintOne(
        'name: base\nscopes: [cred:v]\ncredentials:\n  v:\n    provider: vault\n    vault_policies: [p]\n    path: secret/data/x\n    ttl: 1m\n',
      );
      one(both.problems, both.file, 7, /one of vault_policies, path or kv/, 11);
    });

    it('vault: no root policy, no path tricks', async () => {
      const root = await lintOne('name: base\nscopes: [cred:v]\ncredentials:\n  v: { provider: vault, vault_policies: [Root], ttl: 1m }\n');
      one(root.problems, root.file, 4, /root policy/);
      const dots = await lintOne('name: base\nscopes: [cred:v]\ncredentials:\n  v: { provider: vault, path: secret/../sys/raw, ttl: 1m }\n');
      one(dots.problems, dots.file, 4, /credentials\.v\.path: must be a Vault API path/);
    });

    it('vault: default_policy is for child tokens (vault_policies), not for a secret read', async () => {
      const ok = await lintOne('name: base\nscopes: [cred:v]\ncredentials:\n  v: { provider: vault, vault_policies: [p], default_policy: true, ttl: 1m }\n');
      assert.deepEqual(ok.problems, []);
      const onPath = await lintOne(
        'name: base\nscopes: [cred:v]\ncredentials:\n  v:\n    provider: vault\n    path: database/creds/ro\n    default_policy: true\n    ttl: 1m\n',
      );
      one(onPath.problems, onPath.file, 7, /credentials\.v\.default_policy: .*only with vault_policies/);
    });

    it('aws-sts: role_arn shape, session_policy size, policy_arns count, ttl cap', async () => {
      const cred = (extra: string) => `name: base\nscopes: [cred:s3]\nsession_ttl: 12h\ncredentials:\n  s3:\n    provider: aws-sts\n    ttl: 15m\n${extra}`;
      const arn = await lintOne(cred('    role_arn: arn:aws:iam::1234:role/x\n'));
      one(arn.problems, arn.file, 8, /role_arn: must look like arn:aws:iam::123456789012:role\/NAME/, 15);
      const ok = '    role_arn: arn:aws:iam::123456789012:role/path/agent\n';
      const big = await lintOne(`${cred(ok)}    session_policy: { Statement: "${'x'.repeat(2048)}" }\n`);
      one(big.problems, big.file, 9, /session_policy: is longer than 2048/);
      // Exactly at the limit passes: {"Statement":"…"} is 16 characters of JSON around the value.
      const edge = await lintOne(`${cred(ok)}    session_policy: { Statement: "${'x'.repeat(2048 - 16)}" }\n`);
      assert.deepEqual(edge.problems, []);
      // Measured as sent: with the time bound Cordon adds to each Allow statement.
      const cond = ',"Condition":{"DateLessThan":{"aws:CurrentTime":"2026-12-01T22:10:05Z"}}'.length;
      const allow = (n: number) =>
        JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: `arn:aws:s3:::${'r'.repeat(n)}` }] });
      const pad = 2048 - allow(0).length;
      assert.equal(allow(pad).length, 2048);
      const bare = await lintOne(`${cred(ok)}    session_policy: ${allow(pad - cond + 1)}\n`);
      const p = one(
        bare.problems,
        bare.file,
        9,
        /session_policy: is longer than 2048 characters \(the STS limit\) as sent: 2049 as compact JSON once Cordon adds its time bound \(a DateLessThan aws:CurrentTime condition, the token's expiry\) to each Allow statement \(\d+ characters here\)/,
      );
      assert.ok(p.message.endsWith(`(${cond} characters here)`));
      assert.deepEqual((await lintOne(`${cred(ok)}    session_policy: ${allow(pad - cond)}\n`)).problems, [], 'exactly 2048 as sent');
      const noDate = await lintOne(
        `${cred(ok)}    session_policy: { Version: "2012-10-17", Statement: [{ Effect: Allow, Action: "*", Resource: "*", Condition: { DateLessThan: { "aws:CurrentTime": "\${aws:TokenIssueTime}" } } }] }\n`,
      );
      one(noDate.problems, noDate.file, 9, /session_policy: Statement\[0\]: DateLessThan aws:CurrentTime must be an ISO 8601 date or epoch seconds/);
      const arns = Array.from({ length: 11 }, (_, i) => `arn:aws:iam::aws:policy/P${i}`).join(', ');
      const many = await lintOne(`${cred(ok)}    policy_arns: [${arns}]\n`);
      one(many.problems, many.file, 9, /at most 10 policy ARNs/);
      const long = await lintOne(cred(ok).replace('ttl: 15m', 'ttl: 13h').replace('session_ttl: 12h', 'session_ttl: 1d'));
      one(long.problems, long.file, 7, /ttl: must be at most 12h/);
    });

    it('aws-sts: allow_overhang is refused, saying it was removed and why (whatever its value)', async () => {
      const cred = (extra: string) =>
        `name: base\nscopes: [cred:s3]\ncredentials:\n  s3:\n    provider: aws-sts\n    role_arn: arn:aws:iam::123456789012:role/agent\n    ttl: 15m\n${extra}`;
      for (const v of ['true', 'false']) {
        const r = await lintOne(cred(`    allow_overhang: ${v}\n`));
        const p = one(
          r.problems,
          r.file,
          8,
          /credentials\.s3\.allow_overhang: allow_overhang was removed: a credential may no longer outlive the token that asked for it\. Its session policy ends it at the token's expiry/,
        );
        assert.notEqual(p.severity, 'warning', 'an error: the policy is refused');
        assert.deepEqual(r.policies, []);
      }
    });

    it('aws-sts: revoke_via_iam: false is a warning (the policy still loads); left out, it is on', async () => {
      const text = (extra: string) =>
        `name: base\nscopes: [cred:s3]\ncredentials:\n  s3:\n    provider: aws-sts\n    role_arn: arn:aws:iam::123456789012:role/agent\n    ttl: 15m\n${extra}`;
      const off = await lintOne(text('    revoke_via_iam: false\n'));
      assert.deepEqual(off.problems, [], 'a warning is not an error');
      const p = one(
        off.warnings,
        off.file,
        8,
        /revoke_via_iam is off: revoking a session or token cannot end these STS credentials before they expire \(they still end with their token, by their session policy\)/,
      );
      assert.equal(p.severity, 'warning');
      assert.deepEqual(
        off.policies.map((x) => x.name),
        ['base'],
        'a warning does not drop the policy',
      );
      const dir = await dirWith({ 'p.yaml': text('    revoke_via_iam: false\n') });
      assert.deepEqual((await loadPolicies(dir)).names(), ['base'], 'the broker loads it');
      for (const extra of ['', '    revoke_via_iam: true\n']) {
        const r = await lintOne(text(extra));
        assert.deepEqual([...r.problems, ...r.warnings], []);
      }
      // An error next to the warning still refuses the set.
      const both = await dirWith({ 'p.yaml': text('    revoke_via_iam: false\n').replace('scopes: [cred:s3]', 'scopes: [cred:s3, cred:nope]') });
      await assert.rejects(loadPolicies(both), (e: unknown) => e instanceof PolicyLintError && e.problems.length === 1 && /cred:nope/.test(e.message));
    });
  });

  describe('semantic rules', () => {
    it('session_ttl shorter than token_ttl, at session_ttl', async () => {
      const { file, problems } = await lintOne(`${BASE}token_ttl: 30m\nsession_ttl: 20m\n`);
      one(problems, file, 6, /session_ttl \(1200s\) is shorter than token_ttl \(1800s\)/, 14);
    });

    it('token_ttl above the default session_ttl, at token_ttl', async () => {
      const { file, problems } = await lintOne(`${BASE}token_ttl: 2h\n`);
      one(problems, file, 5, /shorter than token_ttl/, 12);
    });

    it('delegation.scopes not covered by scopes', async () => {
      const { file, problems } = await lintOne(`${BASE}delegation:\n  max_depth: 1\n  scopes:\n    - tickets:read\n    - tickets:write\n`);
      one(problems, file, 9, /delegation\.scopes\[1\]: tickets:write is handed down but not held/, 7);
    });

    it('delegation.scopes covered by a wildcard pass', async () => {
      const { problems } = await lintOne('name: w\nscopes: [tickets:*]\ndelegation: { max_depth: 1, scopes: [tickets:read, tickets:a:*] }\n');
      assert.deepEqual(problems, []);
    });

    it('a cred: scope that no policy defines (here the only one), at the scope', async () => {
      const { file, problems } = await lintOne('name: base\nscopes:\n  - tickets:read\n  - cred:ghost\n');
      one(problems, file, 4, /scopes\[1\]: cred:ghost grants a credential that no policy in this directory defines/, 5);
    });

    it('a credentials entry no cred: scope grants, at the key', async () => {
      const { file, problems } = await lintOne(`${BASE}  extra: { provider: vault, path: kv/data/x, ttl: 1m }\n`);
      one(problems, file, 5, /credential extra is defined but no cred:extra scope grants it/, 3);
    });

    it('credential names must match the name pattern', async () => {
      const { file, problems } = await lintOne(
        'name: base\nscopes: [cred:Bad_Name]\ncredentials:\n  Bad_Name: { provider: vault, path: kv/data/x, ttl: 1m }\n',
      );
      one(problems, file, 4, /credential name "Bad_Name" must match/, 3);
    });

    it('policy names must match the name pattern', async () => {
      const { file, problems } = await lintOne(BASE.replace('name: base', 'name: Base Policy'));
      one(problems, file, 1, /policy name "Base Policy" must match/, 7);
    });

    it("a credential's ttl longer than session_ttl", async () => {
      const { file, problems } = await lintOne(
        'name: base\nsession_ttl: 30m\nscopes: [cred:db]\ncredentials:\n  db:\n    provider: vault\n    path: database/creds/ro\n    ttl: 1h\n',
      );
      one(problems, file, 8, /credentials\.db\.ttl: ttl \(3600s\) is longer than session_ttl \(1800s\)/, 10);
    });

    it('federation rules need exactly one of jwks_uri / jwks_file', async () => {
      const rule = (keys: string) =>
        `${BASE}federation:\n  - issuer: https://k8s.example\n    audience: cordon\n    match: system:serviceaccount:ns:sa\n${keys}`;
      const neither = await lintOne(rule(''));
      one(neither.problems, neither.file, 6, /federation\[0\]: needs jwks_uri or jwks_file/, 5);
      const both = await lintOne(rule('    jwks_uri: https://k8s.example/jwks\n    jwks_file: /etc/jwks.json\n'));
      one(both.problems, both.file, 6, /federation\[0\]: takes jwks_uri or jwks_file, not both/);
      const http = await lintOne(rule('    jwks_uri: http://k8s.example/jwks\n'));
      one(http.problems, http.file, 9, /jwks_uri: must be an https:\/\/ URL/, 15);
      const loopback = await lintOne(rule('    jwks_uri: http://127.0.0.1:9999/jwks\n'));
      assert.deepEqual(loopback.problems, []);
    });
  });

  describe('the gateway (upstreams, deliver, egress, limits)', () => {
    // A valid gateway policy; tests substitute one line and assert the line numbers that follow.
    const GW = `name: gw
scopes: [gw:tickets, gw:github/list_issues]
credentials:
  tickets-key: { provider: vault, kv: secret/data/tickets, deliver: gateway }
  github-pat: { provider: vault, kv: secret/data/github, deliver: gateway }
upstreams:
  tickets:
    url: https://tickets.internal/api
    credential: tickets-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    rules:
      read: { methods: [GET], paths: ["/tickets/*"] }
  github:
    kind: mcp
    url: https://mcp.github.internal/mcp
    credential: github-pat
    inject: { header: Authorization, value: "Bearer {secret.token}" }
    tools: [list_issues, add_issue_comment]
    args: { add_issue_comment: { owner: acme } }
egress:
  - { host: api.openai.com, ports: [443] }
limits:
  calls_per_minute: 600
  on_denials: { count: 5, within: 1m, then: revoke_session }
`;
    /** GW with one line replaced (the line must exist exactly once). */
    const gw = (line: string, by: string): string => {
      assert.equal(GW.split(`${line}\n`).length, 2, line);
      return GW.replace(`${line}\n`, by === '' ? '' : `${by}\n`);
    };

    it("DESIGN.md's example policy lints clean and loads as the gateway reads it (a kv credential's ttl defaults to 5m)", async () => {
      const { policies, problems, warnings } = await lintOne(`name: support-summarizer
description: Reads support tickets and summarizes them.
token_ttl: 10m
session_ttl: 1h
scopes: [tickets:read, crm.contacts:read, cred:tickets-db, cred:tickets-vault, cred:reports-s3]
audiences: [https://tickets.internal]
delegation:
  max_depth: 1
  scopes: [tickets:read]
credentials:
  tickets-vault: { provider: vault, vault_policies: [tickets-read], ttl: 10m }
  tickets-db: { provider: vault, path: database/creds/tickets-ro, ttl: 10m }
  reports-s3:
    provider: aws-sts
    role_arn: arn:aws:iam::123456789012:role/agent-reports
    session_policy: { Version: "2012-10-17", Statement: [{ Effect: Allow, Action: [s3:GetObject], Resource: ["arn:aws:s3:::reports/*"] }] }
    ttl: 15m
    deliver: gateway
  tickets-api-key: { provider: vault, kv: secret/data/tickets, deliver: gateway }
  github-pat: { provider: vault, kv: secret/data/github, deliver: gateway }
upstreams:
  tickets:
    url: https://tickets.internal/api
    credential: tickets-api-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    rules:
      read:    { methods: [GET], paths: ["/tickets/*"] }
      comment: { methods: [POST], paths: ["/tickets/*/comments"] }
  reports:
    url: https://s3.us-east-1.amazonaws.com
    credential: reports-s3
    inject: { aws_sigv4: { service: s3, region: us-east-1 } }
    rules: { read: { methods: [GET, HEAD], paths: ["/reports/*"] } }
  github:
    kind: mcp
    url: https://mcp.github.internal/mcp
    credential: github-pat
    inject: { header: Authorization, value: "Bearer {secret.token}" }
    tools: [list_issues, get_issue, add_issue_comment]
    args: { add_issue_comment: { owner: acme, repo: "agents-*" } }
egress:
  - { host: api.openai.com, ports: [443] }
limits:
  calls_per_minute: 600
  on_denials: { count: 5, within: 1m, then: revoke_session }
`);
      assert.deepEqual(problems.map(formatProblem), []);
      assert.deepEqual(warnings.map(formatProblem), []);
      const [p] = policies;
      assert.deepEqual(p.credentials['tickets-api-key'], { provider: 'vault', kv: 'secret/data/tickets', deliver: 'gateway', ttl: 300 });
      assert.deepEqual(p.upstreams.reports, {
        kind: 'http',
        url: 'https://s3.us-east-1.amazonaws.com',
        credential: 'reports-s3',
        inject: { aws_sigv4: { service: 's3', region: 'us-east-1' } },
        rules: { read: { methods: ['GET', 'HEAD'], paths: ['/reports/*'] } },
        timeoutSec: 30,
        maxBodyBytes: 1 << 20,
      });
      assert.deepEqual(p.upstreams.github.tools, ['list_issues', 'get_issue', 'add_issue_comment']);
      assert.deepEqual(p.egress, [{ host: 'api.openai.com', ports: [443] }]);
      assert.deepEqual(p.limits, { callsPerMinute: 600, onDenials: { count: 5, withinSec: 60, then: 'revoke_session' } });
    });

    it('the base gateway policy of these tests lints clean; a kv ttl never defaults past session_ttl', async () => {
      const { policies, problems, warnings } = await lintOne(`${GW}session_ttl: 2m\ntoken_ttl: 1m\n`);
      assert.deepEqual([...problems, ...warnings].map(formatProblem), []);
      assert.equal(policies[0].credentials['tickets-key'].ttl, 120);
    });

    it('a gw: scope naming no upstream, at the scope', async () => {
      const { file, problems } = await lintOne(gw('scopes: [gw:tickets, gw:github/list_issues]', 'scopes:\n  - gw:tickets\n  - gw:ghost/read'));
      one(problems, file, 4, /^scopes\[1\]: gw:ghost\/read grants an upstream that no policy in this directory defines \(under upstreams:\)$/, 5);
    });

    it('gw:NAME/RULE names a rule of the upstream (of kind mcp: a tool it lists); gw:NAME/* names none', async () => {
      const rule = await lintOne(gw('scopes: [gw:tickets, gw:github/list_issues]', 'scopes: [gw:tickets/*, gw:github/list_issues, gw:tickets/delete]'));
      one(rule.problems, rule.file, 2, /^scopes\[2\]: gw:tickets\/delete names rule delete, which upstream tickets does not define \(its rules: read\)$/, 47);
      const tool = await lintOne(gw('scopes: [gw:tickets, gw:github/list_issues]', 'scopes: [gw:tickets, gw:github/delete_repo]'));
      one(
        tool.problems,
        tool.file,
        2,
        /^scopes\[1\]: gw:github\/delete_repo names tool delete_repo, which upstream github does not list under tools \(tools: list_issues, add_issue_comment\)$/,
        22,
      );
    });

    describe("gw: scopes across policies (the session root's upstreams govern)", () => {
      const ORCH = GW.replace('name: gw', 'name: orchestrator').replace(
        'scopes: [gw:tickets, gw:github/list_issues]',
        // gw:tickets does not cover gw:tickets/read (no scope covers a longer one but by a wildcard): gw:tickets/* does.
        'scopes: [gw:tickets/*, gw:github/list_issues]\ndelegation: { max_depth: 1, scopes: [gw:tickets/read] }',
      );

      it('a sub-agent may list gw: scopes it only receives by delegation; a rule no definer has is an error', async () => {
        const ok = await dirWith({ 'orch.yaml': ORCH, 'sub.yaml': 'name: sub\nscopes: [gw:tickets/read, gw:github]\n' });
        const r = await lintPolicyDir(ok);
        assert.deepEqual([...r.problems, ...r.warnings].map(formatProblem), []);
        const bad = await dirWith({ 'orch.yaml': ORCH, 'sub.yaml': 'name: sub\nscopes:\n  - gw:tickets/read\n  - gw:tickets/comment\n' });
        const { problems } = await lintPolicyDir(bad);
        one(
          problems,
          join(bad, 'sub.yaml'),
          4,
          /^scopes\[1\]: gw:tickets\/comment names rule comment, which no policy in this directory defines for upstream tickets$/,
          5,
        );
      });

      it('gw:NAME covers its rules as a scope, so a policy holding gw:NAME may hand gw:NAME/RULE down', async () => {
        const { problems } = await lintOne(ORCH.replace('scopes: [gw:tickets/*, ', 'scopes: [gw:tickets, '));
        assert.deepEqual(problems.map(formatProblem), []);
      });

      it("warns on a sub-agent's upstream that a policy handing part of it down overrides", async () => {
        const own = `name: sub\nscopes: [gw:tickets/read]\ncredentials:\n  k: { provider: vault, kv: secret/data/k, deliver: gateway }\nupstreams:\n  tickets:\n    url: https://elsewhere.example\n    credential: k\n    inject: { query: key, value: "{secret.key}" }\n    rules: { read: { methods: [GET], paths: ["/**"] } }\n`;
        const dir = await dirWith({ 'orch.yaml': ORCH, 'sub.yaml': own });
        const { problems, warnings } = await lintPolicyDir(dir);
        assert.deepEqual(problems.map(formatProblem), []);
        one(warnings, join(dir, 'sub.yaml'), 6, /^upstreams\.tickets: policy orchestrator also defines tickets and hands gw:tickets down/, 3);
      });
    });

    it("an upstream's credential must be one its own policy defines", async () => {
      const { file, problems } = await lintOne(gw('    credential: tickets-key', '    credential: ghost-key'));
      // tickets-key, now injected by nothing and granted by no cred: scope, is an error of its own.
      assert.deepEqual(
        problems.map((p) => [p.file, p.line, p.column]),
        [
          [file, 4, 3],
          [file, 9, 17],
        ],
      );
      assert.match(problems[1].message, /^upstreams\.tickets\.credential: ghost-key is not defined under credentials: in this policy/);
    });

    it('an upstream naming no credential; inject without credential; credential without inject', async () => {
      const neither = await lintOne(
        gw('    credential: tickets-key', '').replace('    inject: { header: Authorization, value: "Bearer {secret.api_key}" }\n', ''),
      );
      // tickets-key is now neither granted nor injected: its own error, at its key.
      assert.deepEqual(
        neither.problems.map((p) => [p.line, p.column]),
        [
          [4, 3],
          [8, 5],
        ],
        neither.problems.map(formatProblem).join('\n'),
      );
      assert.match(
        neither.problems[0].message,
        /^credentials: credential tickets-key is defined but no cred:tickets-key scope grants it and no upstream injects it$/,
      );
      assert.match(neither.problems[1].message, /^upstreams\.tickets: names no credential: add credential: NAME/);
      const injectOnly = await lintOne(
        gw('    credential: tickets-key', '').replace('  tickets-key: { provider: vault, kv: secret/data/tickets, deliver: gateway }\n', ''),
      );
      one(injectOnly.problems, injectOnly.file, 8, /^upstreams\.tickets\.inject: has no credential to inject: add credential: NAME/, 13);
      const credOnly = await lintOne(gw('    inject: { header: Authorization, value: "Bearer {secret.api_key}" }', ''));
      one(credOnly.problems, credOnly.file, 9, /^upstreams\.tickets\.credential: tickets-key is never injected: add inject:/, 17);
    });

    it('aws_sigv4 needs an aws-sts credential; header and query injection a vault one', async () => {
      const sigv4 = await lintOne(
        gw('    inject: { header: Authorization, value: "Bearer {secret.api_key}" }', '    inject: { aws_sigv4: { service: s3, region: us-east-1 } }'),
      );
      one(sigv4.problems, sigv4.file, 10, /^upstreams\.tickets\.inject\.aws_sigv4: signs with AWS STS keys, but tickets-key is a vault credential/, 26);
      const sts = await lintOne(
        gw(
          '  tickets-key: { provider: vault, kv: secret/data/tickets, deliver: gateway }',
          '  tickets-key: { provider: aws-sts, role_arn: "arn:aws:iam::123456789012:role/r", ttl: 15m, deliver: gateway }',
        ),
      );
      one(
        sts.problems,
        sts.file,
        10,
        /^upstreams\.tickets\.inject: a header injection needs a vault credential, but tickets-key is aws-sts: sign the calls with inject: \{ aws_sigv4/,
        13,
      );
    });

    it('{token} only for a child token (vault_policies), {secret.FIELD} only for a secret read (kv or path), and some placeholder always', async () => {
      const inject = '    inject: { header: Authorization, value: "Bearer {secret.api_key}" }';
      const token = await lintOne(gw(inject, '    inject: { query: key, value: "{token}" }'));
      one(
        token.problems,
        token.file,
        10,
        /^upstreams\.tickets\.inject\.value: \{token\} is a Vault child token, but tickets-key reads a secret \(kv\): use \{secret\.FIELD\}/,
        34,
      );
      const child = gw(
        '  tickets-key: { provider: vault, kv: secret/data/tickets, deliver: gateway }',
        '  tickets-key: { provider: vault, vault_policies: [tickets-read], ttl: 5m }',
      );
      assert.deepEqual((await lintOne(child.replace('{secret.api_key}', '{token}'))).problems, []);
      const field = await lintOne(child);
      one(
        field.problems,
        field.file,
        10,
        /^upstreams\.tickets\.inject\.value: \{secret\.api_key\} is a field of a secret read, but tickets-key is a Vault child token \(vault_policies\): use \{token\}/,
        45,
      );
      const none = await lintOne(GW.replace('Bearer {secret.api_key}', 'Bearer sk-live-123'));
      one(none.problems, none.file, 10, /^upstreams\.tickets\.inject\.value: injects nothing of tickets-key: put \{secret\.FIELD\} in it/, 45);
    });

    it('an http upstream with no rules would allow nothing: an error, saying so', async () => {
      const { file, problems } = await lintOne(gw('    rules:', '').replace('      read: { methods: [GET], paths: ["/tickets/*"] }\n', ''));
      one(problems, file, 8, /^upstreams\.tickets: has no rules, so the gateway would allow no call to it: add rules:/, 5);
    });

    it('kind mcp needs tools, args only for listed tools, no rules; the MCP keys are errors on kind http', async () => {
      const noTools = await lintOne(
        gw('    tools: [list_issues, add_issue_comment]', '    tools: []').replace('    args: { add_issue_comment: { owner: acme } }\n', ''),
      );
      // gw:github/list_issues now names a tool the upstream does not list either.
      assert.deepEqual(
        noTools.problems.map((p) => [p.line, p.column]),
        [
          [18, 12],
          [2, 22],
        ],
        noTools.problems.map(formatProblem).join('\n'),
      );
      assert.match(noTools.problems[0].message, /^upstreams\.github\.tools: is kind mcp but lists no tools, so the gateway would allow no call to it/);
      const args = await lintOne(gw('    args: { add_issue_comment: { owner: acme } }', '    args: { add_comment: { owner: acme } }'));
      one(args.problems, args.file, 19, /^upstreams\.github\.args: add_comment is not one of tools \(list_issues, add_issue_comment\)$/, 13);
      const rules = await lintOne(
        gw(
          '    tools: [list_issues, add_issue_comment]',
          '    tools: [list_issues, add_issue_comment]\n    rules: { read: { methods: [GET], paths: ["/**"] } }',
        ),
      );
      one(rules.problems, rules.file, 19, /^upstreams\.github: rules are for kind http: an mcp upstream grants its tools/, 5);
      const onHttp = await lintOne(gw('    rules:', '    tools: [x]\n    audit_args: full\n    rules:'));
      assert.deepEqual(
        onHttp.problems.map((p) => [p.line, p.column, p.message]),
        [
          [11, 5, 'upstreams.tickets: tools is for kind: mcp upstreams; this one is kind http'],
          [12, 5, 'upstreams.tickets: audit_args is for kind: mcp upstreams; this one is kind http'],
        ],
      );
    });

    it('a kv credential must be deliver: gateway (left out or agent)', async () => {
      const kv = '  tickets-key: { provider: vault, kv: secret/data/tickets, deliver: gateway }';
      const absent = await lintOne(gw(kv, '  tickets-key: { provider: vault, kv: secret/data/tickets }'));
      one(
        absent.problems,
        absent.file,
        4,
        /^credentials\.tickets-key\.kv: a kv credential \(a static secret, which no revocation can take back\) must be deliver: gateway/,
        39,
      );
      const agent = await lintOne(gw(kv, '  tickets-key: { provider: vault, kv: secret/data/tickets, deliver: agent }'));
      one(agent.problems, agent.file, 4, /^credentials\.tickets-key\.deliver: a kv credential .* must be deliver: gateway/, 69);
    });

    it('a deliver: gateway credential no upstream injects is a warning (nothing can use it)', async () => {
      const github = '  github-pat: { provider: vault, kv: secret/data/github, deliver: gateway }';
      const text = gw(github, `${github}\n  spare: { provider: vault, path: database/creds/ro, ttl: 5m, deliver: gateway }`).replace(
        'scopes: [',
        'scopes: [cred:spare, ',
      );
      const { file, problems, warnings } = await lintOne(text);
      assert.deepEqual(problems.map(formatProblem), []);
      const w = one(warnings, file, 6, /^credentials\.spare: is deliver: gateway but no upstream of this policy injects it/, 10);
      assert.equal(w.severity, 'warning');
    });

    it('a vault credential needs a ttl unless it is kv', async () => {
      const { file, problems } = await lintOne('name: base\nscopes: [cred:db]\ncredentials:\n  db: { provider: vault, path: database/creds/ro }\n');
      one(problems, file, 4, /^credentials\.db\.ttl: is required$/, 7);
    });

    it('egress: host "*" alone is refused, saying why', async () => {
      const { file, problems } = await lintOne(
        gw('  - { host: api.openai.com, ports: [443] }', '  - { host: api.openai.com, ports: [443] }\n  - { host: "*", ports: [443] }'),
      );
      one(problems, file, 22, /^egress\[1\]\.host: "\*" would let the agent reach any host; list the hosts/, 13);
    });

    it('limits: on_denials.within must be longer than nothing', async () => {
      const { file, problems } = await lintOne(
        gw('  on_denials: { count: 5, within: 1m, then: revoke_session }', '  on_denials: { count: 5, within: 0, then: revoke_session }'),
      );
      one(problems, file, 24, /^limits\.on_denials\.within: invalid duration 0: must be greater than zero$/, 35);
    });
  });

  describe('the directory', () => {
    it('names the second file of a duplicate policy name and mentions the first', async () => {
      const dir = await dirWith({ 'a.yaml': BASE, 'b.yml': `# same name\n${BASE}` });
      const { policies, problems } = await lintPolicyDir(dir);
      one(problems, join(dir, 'b.yml'), 2, new RegExp(`policy base is already defined in ${join(dir, 'a.yaml').replace(/[.\\]/g, '\\$&')}`), 7);
      assert.deepEqual(
        policies.map((p) => p.file),
        [join(dir, 'a.yaml')],
      );
    });

    it('an identity single_use in one policy must be single_use wherever it is trusted (else a replay opens sessions through the other rule)', async () => {
      const fed = (name: string, once: boolean) =>
        `name: ${name}\nscopes: [a]\nfederation:\n  - { issuer: https://idp.example, jwks_uri: https://idp.example/jwks, audience: cordon, match: user:alice${once ? ', single_use: true' : ''} }\n`;
      const dir = await dirWith({ 'a.yaml': fed('strict', true), 'b.yaml': fed('lax', false) });
      const { problems } = await lintPolicyDir(dir);
      one(problems, join(dir, 'b.yaml'), 4, /federation\[0\]: https:\/\/idp\.example sub=user:alice is single_use in policy strict, so it must be here too/, 5);
      const agreed = await dirWith({
        'a.yaml': fed('strict', true),
        'b.yaml': fed('also', true),
        'c.yaml': fed('other', false).replace('user:alice', 'user:bob'),
      });
      assert.deepEqual((await lintPolicyDir(agreed)).problems, []);
    });

    describe("cred: scopes across policies (the session root's definition governs)", () => {
      const ORCHESTRATOR = `name: orchestrator
scopes: [tickets:read, cred:tickets-vault]
delegation:
  max_depth: 1
  scopes: [tickets:read, cred:tickets-vault]
credentials:
  tickets-vault: { provider: vault, vault_policies: [tickets-read], ttl: 10m }
`;
      const SUB = 'name: sub-agent\nscopes: [tickets:read, cred:tickets-vault]\n';

      it('a sub-agent may list a cred: scope that another policy defines, to receive it by delegation', async () => {
        const dir = await dirWith({ 'orchestrator.yaml': ORCHESTRATOR, 'sub.yaml': SUB });
        const { policies, problems, warnings } = await lintPolicyDir(dir);
        assert.deepEqual(problems.map(formatProblem), []);
        assert.deepEqual(warnings.map(formatProblem), []);
        assert.deepEqual(
          policies.map((p) => p.name),
          ['orchestrator', 'sub-agent'],
        );
      });

      it('a cred: scope that no policy defines is an error at that scope', async () => {
        const dir = await dirWith({
          'orchestrator.yaml': ORCHESTRATOR,
          'sub.yaml': 'name: sub-agent\nscopes:\n  - tickets:read\n  - cred:tickets-vault\n  - cred:ghost\n',
        });
        const { problems, warnings } = await lintPolicyDir(dir);
        const p = one(problems, join(dir, 'sub.yaml'), 5, /^scopes\[2\]: cred:ghost grants a credential that no policy in this directory defines/, 5);
        assert.notEqual(p.severity, 'warning');
        assert.deepEqual(warnings, []);
      });

      it("warns (without failing) on a sub-agent's definition that a delegating policy's definition overrides", async () => {
        const own = `${SUB}credentials:\n  tickets-vault: { provider: vault, vault_policies: [tickets-admin], ttl: 5m }\n`;
        const dir = await dirWith({ 'orchestrator.yaml': ORCHESTRATOR, 'sub.yaml': own });
        const { problems, warnings } = await lintPolicyDir(dir);
        assert.deepEqual(problems.map(formatProblem), []);
        const w = one(
          warnings,
          join(dir, 'sub.yaml'),
          4,
          /^credentials\.tickets-vault: policy orchestrator also defines tickets-vault and hands cred:tickets-vault down/,
          3,
        );
        assert.equal(w.severity, 'warning');
        assert.match(formatProblem(w), /^[^:]+:4:3: warning: credentials\.tickets-vault: /);
        // Nothing to warn about when the other definer does not hand cred:tickets-vault down.
        const keeps = await dirWith({
          'orchestrator.yaml': ORCHESTRATOR.replace('  scopes: [tickets:read, cred:tickets-vault]', '  scopes: [tickets:read]'),
          'sub.yaml': own,
        });
        assert.deepEqual((await lintPolicyDir(keeps)).warnings, []);
        const set = await loadPolicies(dir);
        assert.deepEqual(set.names(), ['orchestrator', 'sub-agent']);
        assert.deepEqual(set.warnings.map(formatProblem), [formatProblem(w)]);
      });
    });

    it('reads *.yaml and *.yml only, sorted, skipping hidden files and subdirectories, following symlinks', async () => {
      const dir = await dirWith({
        'b.yml': BASE.replace('base', 'b'),
        'a.yaml': BASE.replace('base', 'a'),
        'README.md': 'not a policy',
        '.hidden.yaml': 'garbage: [',
        'notes.yaml.bak': 'garbage: [',
      });
      await mkdir(join(dir, 'sub.yaml'));
      await writeFile(join(dir, 'sub.yaml', 'x.yaml'), 'garbage: [');
      await symlink(join(dir, 'a.yaml'), join(dir, 'c.yaml'));
      const { policies, problems } = await lintPolicyDir(dir);
      one(problems, join(dir, 'c.yaml'), 1, /already defined/);
      assert.deepEqual(
        policies.map((p) => p.name),
        ['a', 'b'],
      );
    });

    it('keeps going after a bad file and reports every file', async () => {
      const dir = await dirWith({ 'a.yaml': 'name: [', 'b.yaml': BASE, 'c.yaml': `${BASE}bogus: 1\n` });
      const { policies, problems } = await lintPolicyDir(dir);
      assert.deepEqual(
        policies.map((p) => p.name),
        ['base'],
      );
      assert.deepEqual([...new Set(problems.map((p) => p.file))], [join(dir, 'a.yaml'), join(dir, 'c.yaml')]);
    });

    it('an empty directory is zero policies', async () => {
      const set = await loadPolicies(await dirWith({}));
      assert.deepEqual(set.names(), []);
    });

    it('a missing directory is a clear error naming it', async () => {
      const missing = join(tmpdir(), 'cordon-no-such-policy-dir');
      await assert.rejects(
        loadPolicies(missing),
        (e: unknown) => e instanceof PolicyDirError && e.message.includes(missing) && /does not exist/.test(e.message),
      );
      const dir = await dirWith({ 'f.yaml': BASE });
      await assert.rejects(lintPolicyDir(join(dir, 'f.yaml')), /is not a directory/);
    });
  });

  describe('loadPolicies', () => {
    it('refuses the whole set on any problem, first problem in the message', async () => {
      const dir = await dirWith({ 'a.yaml': BASE, 'b.yaml': `${BASE.replace('base', 'other')}bogus: 1\nalso: 2\n` });
      await assert.rejects(loadPolicies(dir), (e: unknown) => {
        assert.ok(e instanceof PolicyLintError);
        assert.equal(e.problems.length, 2);
        assert.ok(e.message.startsWith(`${join(dir, 'b.yaml')}:5:1: unknown key "bogus"`), e.message);
        assert.match(e.message, /and 1 more problem\)$/);
        return true;
      });
    });

    it('the broker starts with warnings and logs each one', async () => {
      const dir = await dirWith({
        'a.yaml':
          'name: orchestrator\nscopes: [cred:db]\ndelegation: { max_depth: 1, scopes: [cred:db] }\ncredentials:\n  db: { provider: vault, path: database/creds/ro, ttl: 10m }\n',
        'b.yaml': BASE,
      });
      const data = await mkdtemp(join(tmpdir(), 'cordon-broker-'));
      tmpDirs.push(data);
      const lines: string[] = [];
      const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
      const config = loadConfig({ DATABASE_URL: `sqlite://${join(data, 'cordon.sqlite')}`, CORDON_KEY_DIR: join(data, 'keys'), CORDON_POLICY_DIR: dir });
      const b = await openBroker(config, { log });
      try {
        assert.deepEqual(b.policies.names(), ['base', 'orchestrator']);
        const warned = lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40);
        assert.equal(warned.length, 1, lines.join(''));
        assert.equal(warned[0].file, join(dir, 'b.yaml'));
        assert.equal(warned[0].line, 4);
        assert.match(warned[0].msg, /credentials\.db: policy orchestrator also defines db/);
      } finally {
        await closeBroker(b);
      }
    });

    it('hands out frozen policies', async () => {
      const set = await loadPolicies(await dirWith({ 'a.yaml': BASE }));
      const p = set.get('base')!;
      assert.throws(() => p.scopes.push('admin:*'));
      assert.throws(() => {
        (p.delegation as { maxDepth: number }).maxDepth = 5;
      });
      assert.ok(Object.isFrozen(p.credentials.db));
    });
  });
});
