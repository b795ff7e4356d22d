/**
 * Shared helpers for the delegation, bootstrap, federation, DPoP and property suites
 * (not a test file itself: mocha runs *.test.ts only).
 */
import { copyFileSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import type { Broker } from '../src/broker.ts';
import { basic, postForm, type TestBroker } from './helpers/broker.ts';

export const GRANT_TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TT_ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
export const TT_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const TT_BOOTSTRAP = 'urn:cordon:token-type:bootstrap';

export interface Agent {
  id: string;
  secret: string;
  name: string;
}

export type Res = Awaited<ReturnType<typeof postForm>>;

/** A policy directory holding the shipped policies plus `extra` (file name → YAML). */
export function policyDir(extra: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-pol-'));
  for (const f of readdirSync(resolve('policies'))) if (/\.ya?ml$/.test(f)) copyFileSync(join(resolve('policies'), f), join(dir, f));
  for (const [name, yaml] of Object.entries(extra)) writeFileSync(join(dir, name), yaml);
  return dir;
}

export async function register(tb: TestBroker, name: string, policy: string): Promise<Agent> {
  const r = await tb.register(name, policy);
  return { ...r, name };
}

export const token = (tb: TestBroker, a: Agent | null, form: Record<string, string | string[]>, headers: Record<string, string> = {}): Promise<Res> =>
  a
    ? postForm(`${tb.url}/token`, form, { authorization: basic(a.id, a.secret), ...headers })
    : postForm(`${tb.url}/token`, { client_id: 'cordon-workload', ...form }, headers);

export async function session(
  tb: TestBroker,
  a: Agent,
  scope: string,
  extra: Record<string, string | string[]> = {},
  headers: Record<string, string> = {},
): Promise<Res> {
  return token(tb, a, { grant_type: 'client_credentials', scope, ...extra }, headers);
}

export async function mustSession(tb: TestBroker, a: Agent, scope: string, extra: Record<string, string | string[]> = {}): Promise<string> {
  const r = await session(tb, a, scope, extra);
  if (r.status !== 200) throw new Error(`session start failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.access_token as string;
}

export function delegateReq(
  tb: TestBroker,
  caller: Agent,
  subjectToken: string,
  actor: string,
  scope: string | undefined,
  extra: Record<string, string | string[]> = {},
  headers: Record<string, string> = {},
): Promise<Res> {
  return token(
    tb,
    caller,
    {
      grant_type: GRANT_TE,
      subject_token: subjectToken,
      subject_token_type: TT_ACCESS,
      requested_actor: actor,
      ...(scope !== undefined ? { scope } : {}),
      ...extra,
    },
    headers,
  );
}

export async function mustDelegate(
  tb: TestBroker,
  caller: Agent,
  subjectToken: string,
  actor: Agent,
  scope: string,
  extra: Record<string, string | string[]> = {},
): Promise<string> {
  const r = await delegateReq(tb, caller, subjectToken, actor.id, scope, extra);
  if (r.status !== 200) throw new Error(`delegation failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.access_token as string;
}

/** Introspection as `rs` (any registered agent may introspect). */
export async function introspect(tb: TestBroker, rs: Agent, tok: string): Promise<Record<string, any>> {
  const r = await postForm(`${tb.url}/introspect`, { token: tok }, { authorization: basic(rs.id, rs.secret) });
  if (r.status !== 200) throw new Error(`introspect failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export const claimsOf = (jwt: string): Record<string, any> => decodeJwt(jwt) as Record<string, any>;

export async function countTokens(b: Broker): Promise<number> {
  const r = await b.db('tokens').count({ n: '*' }).first();
  return Number(r?.n);
}

export async function countSessions(b: Broker): Promise<number> {
  const r = await b.db('sessions').count({ n: '*' }).first();
  return Number(r?.n);
}

export interface AuditView {
  seq: number;
  event: string;
  decision: string;
  agent_id: string | null;
  sid: string | null;
  jti: string | null;
  chain: string[] | null;
  reason: string | null;
  params: Record<string, any>;
}

/** Audit rows after `afterSeq`, oldest first. */
export async function auditSince(b: Broker, afterSeq: number): Promise<AuditView[]> {
  const rows = await b.db('audit').where('seq', '>', afterSeq).orderBy('seq');
  return rows.map((r) => ({ ...r, seq: Number(r.seq), chain: r.chain ? JSON.parse(r.chain) : null, params: JSON.parse(r.params) }));
}

export async function auditHead(b: Broker): Promise<number> {
  const r = await b.db('audit').max({ m: 'seq' }).first();
  return Number(r?.m ?? 0);
}

/** The deny rows written since `afterSeq`; exactly one is expected per refusal. */
export async function denialsSince(b: Broker, afterSeq: number): Promise<AuditView[]> {
  return (await auditSince(b, afterSeq)).filter((r) => r.decision === 'deny');
}

export interface DpopKey {
  privateKey: CryptoKey;
  publicJwk: JWK;
  jkt: string;
}

export async function dpopKey(alg: 'ES256' | 'EdDSA' = 'ES256'): Promise<DpopKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
  const publicJwk = await exportJWK(publicKey);
  return { privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };
}

/** An RFC 9449 proof; `iat` in seconds (defaults to the wall clock, which the test broker's clock starts at). */
export async function dpopProof(k: DpopKey, htm: string, htu: string, opts: { iat?: number; jti?: string; ath?: string; alg?: string } = {}): Promise<string> {
  return new SignJWT({ htm, htu, jti: opts.jti ?? randomBytes(12).toString('base64url'), ...(opts.ath ? { ath: opts.ath } : {}) })
    .setProtectedHeader({ alg: opts.alg ?? (k.publicJwk.kty === 'OKP' ? 'EdDSA' : 'ES256'), typ: 'dpop+jwt', jwk: k.publicJwk })
    .setIssuedAt(opts.iat ?? Math.floor(Date.now() / 1000))
    .sign(k.privateKey);
}
