import type { AuditEvent } from '../src/store/audit-events.ts';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import canonicalize from 'canonicalize';
import { CompactSign, compactVerify, importJWK, type JWK } from 'jose';
import pino from 'pino';
import { appendAudit, canonical, rowHash, GENESIS_HASH } from '../src/store/audit-chain.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import {
  CHECKPOINT_INTERVAL_MS,
  CHECKPOINT_TYP,
  checkpointPath,
  readSink,
  startCheckpoints,
  verifyWithCheckpoints,
  writeCheckpoint,
  type Every,
} from '../src/audit/checkpoint.ts';
import { loadConfig } from '../src/config/index.ts';
import { startBroker } from '../src/runtime.ts';
import { main } from '../src/cli/main.ts';
import type { Io } from '../src/cli/output.ts';
import { auditRows, type AuditRow } from '../src/store/audit.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';

/** The hand-written encoder the chain was hashed with before RFC 8785, frozen here as the reference. */
function oldCanonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(oldCanonical).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${oldCanonical((value as Record<string, unknown>)[k])}`).join(',')}}`;
}

/** The fields of a row the chain hashes, under their column names. */
const hashedFields = (row: Omit<AuditRow, 'hash' | 'prevHash'>) => ({
  seq: row.seq,
  at: row.at,
  event: row.event,
  decision: row.decision,
  agent_id: row.agentId,
  sid: row.sid,
  jti: row.jti,
  chain: row.chain,
  reason: row.reason,
  params: row.params,
});

const oldRowHash = (row: Omit<AuditRow, 'hash'>): string =>
  createHash('sha256')
    .update(row.prevHash)
    .update('\n')
    .update(oldCanonical(hashedFields(row)))
    .digest('hex');

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

describe('audit: RFC 8785 canonical form', () => {
  const base: Omit<AuditRow, 'hash'> = {
    seq: 7,
    at: 1767225600123,
    event: 'deny',
    decision: 'deny',
    agentId: 'agt_1',
    sid: null,
    jti: null,
    chain: null,
    reason: null,
    params: {},
    prevHash: 'a'.repeat(64),
  };
  const variants: Array<Partial<AuditRow>> = [
    { params: { scope: 'docs:read', task: 'T-1' } },
    { reason: 'naïve — ünïcödé 中文 😀 \u2028\u2029', params: { é: 1, e: 2, Ω: 3, '😀': 4, '\u00e9\u0301': 5, Z: 6, a: 7 } },
    { reason: 'ctl \\u0000 \\u001b', params: { raw: 'nul\u0000 bell\u0007 esc\u001b del\u007f tab\t nl\n cr\r quote" backslash\\ slash/', '\u0001key': true } },
    {
      chain: ['agt_root', 'agt_mid', 'agt_leaf'],
      params: {
        nested: { z: { y: [1, { b: null, a: false }, 'x'], x: {} }, a: [] },
        n: 0,
        neg: -42,
        big: 9007199254740991,
        frac: 0.5,
        exp: 1e21,
        small: 1e-7,
        t: true,
        f: false,
        nil: null,
      },
    },
    { sid: 'ses_x', jti: 'jti_y', params: { requested_scope: 'a b c', revoked_count: 3, by: { actor: 'cli', via: 'test' } } },
  ];

  it('hashes rows (unicode, control characters, nested params, numbers) exactly as the old encoder did', () => {
    for (const v of variants) {
      const row = { ...base, ...v };
      const body = hashedFields(row);
      assert.equal(canonical(body), oldCanonical(body));
      assert.equal(canonical(body), canonicalize(body), 'canonical() is RFC 8785');
      assert.equal(rowHash(row), oldRowHash(row), JSON.stringify(v));
    }
  });

  it('keeps undefined handling: a top-level undefined, or an undefined field, is null', () => {
    assert.equal(canonical(undefined), 'null');
    assert.equal(rowHash({ ...base, agentId: undefined as never, reason: undefined as never }), oldRowHash({ ...base, agentId: null, reason: null }));
  });

  it('a stored lone surrogate (written before params were made well-formed) keeps the hash it was written with', () => {
    const row = { ...base, params: { note: `${'y'.repeat(299)}\ud83d…` } };
    assert.equal(rowHash(row), oldRowHash(row));
  });
});

/** Runs the CLI in this process against the test broker's files, with captured output. */
async function cli(t: TestBroker, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const keys = ['DATABASE_URL', 'CORDON_KEY_DIR', 'CORDON_AUDIT_DIR', 'CORDON_POLICY_DIR', 'CORDON_LOG_LEVEL'];
  const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]));
  Object.assign(process.env, {
    DATABASE_URL: t.b.config.databaseUrl,
    CORDON_KEY_DIR: t.b.config.keyDir,
    CORDON_AUDIT_DIR: t.b.config.auditDir,
    CORDON_POLICY_DIR: t.b.config.policyDir,
    CORDON_LOG_LEVEL: 'silent',
  });
  let out = '';
  let err = '';
  const io: Io = { out: (s) => void (out += s), err: (s) => void (err += s) };
  try {
    const code = await main(argv, io);
    return { code, out, err };
  } finally {
    for (const k of keys) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

describe('audit: signed checkpoints', function () {
  this.timeout(20_000);
  let t: TestBroker;

  const append = (n: number, event: AuditEvent = 'policy.load') =>
    t.b.db.transaction(async (tx) => {
      for (let i = 0; i < n; i++) await appendAudit(tx, { at: t.clock.now(), event, decision: 'info', params: { i, note: 'ünïcödé 😀' } });
    });
  const sinkAppend = (line: string): void => {
    mkdirSync(t.b.config.auditDir, { recursive: true });
    appendFileSync(checkpointPath(t.b.config.auditDir), `${line}\n`);
  };
  const rows = async (): Promise<AuditRow[]> => auditRows.page(t.b.db, 0, 100_000);
  const check = () => verifyWithCheckpoints(t.b.db, t.b.config);
  const failure = async (): Promise<{ brokenSeq: number; problem: string }> => {
    const r = await check();
    assert.equal(r.ok, false, `tampering went unnoticed: ${JSON.stringify(r)}`);
    return r;
  };

  /** What someone who can write the database does: rewrite rows from `fromSeq` on, with every hash recomputed. */
  async function rewriteFrom(fromSeq: number, edit: (rows: AuditRow[]) => AuditRow[]): Promise<void> {
    const all = await rows();
    const kept = all.filter((r) => r.seq < fromSeq);
    const rewritten = edit(all.filter((r) => r.seq >= fromSeq));
    let prev = kept.length ? kept[kept.length - 1].hash : GENESIS_HASH;
    let seq = fromSeq;
    const fixed = rewritten.map((r) => {
      const base = { ...r, seq: seq++, prevHash: prev };
      const row = { ...base, hash: rowHash(base) };
      prev = row.hash;
      return row;
    });
    await t.b.db.transaction(async (tx) => {
      await tx('audit').where('seq', '>=', fromSeq).del();
      await auditRows.insertMany(tx, fixed);
    });
    assert.equal((await verifyAudit(t.b.db)).ok, true, 'the rewritten chain verifies on its own (the attack works without checkpoints)');
  }

  beforeEach(async () => {
    t = await startTestBroker({ http: false });
    await append(5);
  });
  afterEach(async () => t?.close());

  it('with no sink, verifies the chain as before and reports no checkpoints', async () => {
    const r = await check();
    assert.equal(r.ok && r.checkpoints, 0);
    const j = await cli(t, 'audit', 'verify', '--json');
    assert.equal(j.code, 0, j.err);
    assert.equal(JSON.parse(j.out).checkpoints, 0);
    assert.match((await cli(t, 'audit', 'verify')).out, /audit chain intact: \d+ rows, head [0-9a-f]{64}; no checkpoints found/);
  });

  it('writes one JWS per line (dir 0700, file 0600), signed with its own typ, and skips an unmoved head', async () => {
    const first = await writeCheckpoint(t.b);
    assert.ok(first);
    assert.equal(await writeCheckpoint(t.b, first), undefined, 'the head has not moved');
    await append(1);
    const second = await writeCheckpoint(t.b, first);
    assert.ok(second && second.seq === first.seq + 1);
    const path = checkpointPath(t.b.config.auditDir);
    assert.equal(readFileSync(path, 'utf8'), `${first.jws}\n${second.jws}\n`);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(t.b.config.auditDir).mode & 0o777, 0o700);
    const header = JSON.parse(Buffer.from(first.jws.split('.')[0], 'base64url').toString());
    assert.deepEqual(header, { alg: t.b.keys.active().alg, kid: t.b.keys.active().kid, typ: CHECKPOINT_TYP });
    const ok = await check();
    assert.equal(ok.ok && ok.checkpoints, 2);
  });

  it('a row rewritten in the database, with the whole chain after it recomputed, fails at the checkpoint naming the range', async () => {
    await append(3);
    const early = await writeCheckpoint(t.b); // covers row 8
    await append(4);
    const late = await writeCheckpoint(t.b); // covers row 12
    assert.ok(early && late);
    await rewriteFrom(10, (rs) => rs.map((r) => (r.seq === 10 ? { ...r, decision: 'allow', params: { ...r.params, i: 'rewritten' } } : r)));
    const f = await failure();
    assert.equal(f.brokenSeq, late.seq);
    assert.match(f.problem, new RegExp(`row ${late.seq} does not match the signed checkpoint for it: a row from ${early.seq + 1} to ${late.seq} was changed`));
    const c = await cli(t, 'audit', 'verify');
    assert.equal(c.code, 1);
    assert.equal(c.err.trimEnd().split('\n').length, 1);
    assert.match(c.err, new RegExp(`^cordon: audit chain broken at row ${late.seq}: `));
  });

  it('a tail cut below the latest checkpoint fails, naming the first removed row', async () => {
    const cp = await writeCheckpoint(t.b);
    assert.ok(cp);
    await t.b
      .db('audit')
      .where('seq', '>', cp.seq - 2)
      .del();
    assert.equal((await verifyAudit(t.b.db)).ok, true, 'the cut chain verifies on its own');
    const f = await failure();
    assert.equal(f.brokenSeq, cp.seq - 1);
    assert.match(f.problem, /were removed/);
    const j = await cli(t, 'audit', 'verify', '--json');
    assert.equal(j.code, 1);
    assert.equal(JSON.parse(j.out).broken_seq, cp.seq - 1);
  });

  it('a middle row deleted and the rest renumbered and re-hashed fails', async () => {
    const cp = await writeCheckpoint(t.b);
    assert.ok(cp);
    await append(3); // rows after the checkpoint keep the renumbered chain long enough to reach it
    await rewriteFrom(3, (rs) => rs.filter((r) => r.seq !== 3));
    const f = await failure();
    assert.equal(f.brokenSeq, cp.seq);
    assert.match(f.problem, /does not match the signed checkpoint/);
  });

  it('rows swapped and re-hashed fail', async () => {
    const cp = await writeCheckpoint(t.b);
    assert.ok(cp);
    await rewriteFrom(2, (rs) => [rs[1], rs[0], ...rs.slice(2)]);
    assert.equal((await failure()).brokenSeq, cp.seq);
  });

  it('a checkpoint line with a bad signature fails, naming the line and its row', async () => {
    const cp = await writeCheckpoint(t.b);
    assert.ok(cp);
    const [h, p, s] = cp.jws.split('.');
    const bad = `${h}.${p}.${s.slice(0, -4)}${s.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
    sinkAppend(bad);
    const f = await failure();
    assert.equal(f.brokenSeq, cp.seq);
    assert.match(f.problem, /line 2 .*does not verify/);
    const c = await cli(t, 'audit', 'verify');
    assert.equal(c.code, 1);
    assert.match(c.err, /^cordon: audit checkpoint broken: checkpoint on line 2 of checkpoints\.jws \(row \d+\) does not verify/);
  });

  it('a checkpoint forged with a key that is not in the key dir (e.g. one added to signing_keys) fails', async () => {
    const head = (await auditRows.head(t.b.db))!;
    const { privateKey } = generateKeyPairSync('ed25519');
    const forged = await new CompactSign(new TextEncoder().encode(JSON.stringify({ seq: head.seq, hash: head.hash, iat: 1 })))
      .setProtectedHeader({ alg: 'EdDSA', kid: 'attackerkey00001', typ: CHECKPOINT_TYP })
      .sign(privateKey);
    sinkAppend(forged);
    assert.match((await failure()).problem, /signed by key attackerkey00001, which is not in CORDON_KEY_DIR/);
  });

  it('a checkpoint whose key file is unreadable fails with one line, not a stack trace', async () => {
    const cp = await writeCheckpoint(t.b);
    assert.ok(cp);
    writeFileSync(join(t.b.config.keyDir, `${cp.kid}.jwk.json`), '{"kty":"OKP"}');
    assert.match((await failure()).problem, /not a readable private JWK/);
  });

  it('a JWS from the right key but of another typ (an access token, say) is not a checkpoint', async () => {
    const head = (await auditRows.head(t.b.db))!;
    const { kid, alg, privateKey } = t.b.keys.active();
    const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify({ seq: head.seq, hash: head.hash, iat: 1 })))
      .setProtectedHeader({ alg, kid, typ: 'at+jwt' })
      .sign(privateKey);
    sinkAppend(jws);
    assert.match((await failure()).problem, /has typ at\+jwt/);
  });

  it('checkpoints out of order fail', async () => {
    const a = await writeCheckpoint(t.b);
    await append(1);
    const b = await writeCheckpoint(t.b, a);
    assert.ok(a && b);
    writeFileSync(checkpointPath(t.b.config.auditDir), `${b.jws}\n${a.jws}\n`);
    assert.match((await failure()).problem, /out of order/);
  });

  it('rows added after the last checkpoint are fine (and --head still works)', async () => {
    const cp = await writeCheckpoint(t.b);
    assert.ok(cp);
    await append(4);
    const r = await check();
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.ok && r.rows, cp.seq + 4);
    assert.equal(r.ok && r.checkpointSeq, cp.seq);
    const j = await cli(t, 'audit', 'verify', '--json');
    assert.equal(JSON.parse(j.out).checkpoints, 1);
    assert.equal((await cli(t, 'audit', 'verify', '--head', cp.hash)).code, 0);
    assert.equal((await cli(t, 'audit', 'verify', '--head', 'f'.repeat(64))).code, 1);
  });

  describe('export', () => {
    /** A verifier with nothing of Cordon's: node:crypto SHA-256 over the canonical strings, jose with the exported JWKs. */
    async function independentVerify(jsonl: string): Promise<{ rows: number; checkpoints: number }> {
      const lines = jsonl
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l));
      const keys = new Map<string, JWK>((lines.find((l) => l.type === 'keys')?.keys ?? []).map((k: JWK) => [k.kid!, k]));
      const hashes = new Map<number, string>();
      let prev = '0'.repeat(64);
      let rowCount = 0;
      let cps = 0;
      let lastCheckpoint = 0;
      for (const l of lines) {
        if (l.type === 'row') {
          assert.equal(l.prev_hash, prev, `row ${l.seq} does not link`);
          assert.equal(sha256(`${l.prev_hash}\n${l.canonical}`), l.hash, `row ${l.seq} does not hash`);
          const c = JSON.parse(l.canonical);
          for (const k of ['seq', 'at', 'event', 'decision', 'agent_id', 'sid', 'jti', 'chain', 'reason', 'params'])
            assert.deepEqual(c[k], l[k], `row ${l.seq}: ${k} differs from its canonical form`);
          hashes.set(l.seq, l.hash);
          prev = l.hash;
          rowCount++;
        } else if (l.type === 'checkpoint') {
          const header = JSON.parse(Buffer.from(l.jws.split('.')[0], 'base64url').toString());
          const jwk = keys.get(header.kid);
          assert.ok(jwk, `no key for ${header.kid}`);
          const { payload, protectedHeader } = await compactVerify(l.jws, await importJWK(jwk, jwk.alg), { algorithms: [jwk.alg!] });
          assert.equal(protectedHeader.typ, 'cordon-audit-checkpoint+jwt');
          const p = JSON.parse(new TextDecoder().decode(payload));
          assert.ok(p.seq >= lastCheckpoint, 'checkpoints out of order');
          assert.equal(hashes.get(p.seq), p.hash, `the row at checkpoint ${p.seq} is missing or differs`);
          lastCheckpoint = p.seq;
          cps++;
        }
      }
      return { rows: rowCount, checkpoints: cps };
    }

    it('carries canonical forms, checkpoints and their public keys; an independent verifier accepts it, and rejects a rewritten log', async () => {
      await append(1, 'ünïcödé\u0007' as AuditEvent); // control character and unicode in a hashed text column
      const a = await writeCheckpoint(t.b);
      await append(2);
      const b = await writeCheckpoint(t.b, a);
      await append(2); // rows after the last checkpoint
      assert.ok(a && b);
      const exp = await cli(t, 'audit', 'export', '--format', 'jsonl');
      assert.equal(exp.code, 0, exp.err);
      const lines = exp.out
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.equal(lines[0].type, 'keys');
      assert.ok(
        lines[0].keys.every((k: JWK) => !('d' in k)),
        'public keys only',
      );
      // Each checkpoint right after the row it signs.
      const at = lines.findIndex((l) => l.type === 'checkpoint' && l.seq === a.seq);
      assert.deepEqual([lines[at - 1].type, lines[at - 1].seq], ['row', a.seq]);
      assert.equal(lines[at].jws, a.jws);
      assert.deepEqual(await independentVerify(exp.out), { rows: b.seq + 2, checkpoints: 2 });

      await rewriteFrom(2, (rs) => rs.map((r) => (r.seq === 2 ? { ...r, event: 'nothing.here' } : r)));
      const forged = await cli(t, 'audit', 'export');
      await assert.rejects(independentVerify(forged.out), /the row at checkpoint \d+ is missing or differs/);
    });

    it('without checkpoints, is the rows as before (with their canonical form) and no keys line', async () => {
      const out = (await cli(t, 'audit', 'export')).out
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.ok(out.length >= 6);
      assert.deepEqual(
        out.map((l) => l.seq),
        out.map((_, i) => i + 1),
      );
      assert.ok(out.every((l) => l.type === 'row' && typeof l.canonical === 'string'));
    });
  });
});

describe('audit: checkpoints while the broker runs', function () {
  this.timeout(20_000);

  it('the timer checkpoints every minute only when the head moved, and once more at stop', async () => {
    const t = await startTestBroker({ http: false });
    try {
      const logged: any[] = [];
      t.b.log = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => void (logged.push(JSON.parse(String(c))), cb()) }));
      let tick: (() => Promise<unknown>) | undefined;
      let interval = 0;
      let cancelled = false;
      const every: Every = (fn, ms) => {
        tick = fn;
        interval = ms;
        return () => void (cancelled = true);
      };
      const timer = startCheckpoints(t.b, { every });
      assert.equal(interval, CHECKPOINT_INTERVAL_MS);
      assert.ok(interval <= 60_000);
      await tick!();
      await tick!(); // nothing moved
      assert.equal(readSink(t.b.config.auditDir).length, 1);
      await t.b.db.transaction((tx) => appendAudit(tx, { at: t.clock.now(), event: 'policy.load', decision: 'info' }));
      await tick!();
      assert.equal(readSink(t.b.config.auditDir).length, 2);
      await timer.stop(); // nothing moved since: no new line
      assert.equal(cancelled, true);
      assert.equal(readSink(t.b.config.auditDir).length, 2);
      const head = (await auditRows.head(t.b.db))!;
      const entry = logged.find((l) => l.audit_checkpoint?.seq === head.seq);
      assert.ok(entry, 'the checkpoint is logged');
      assert.equal(entry.audit_checkpoint.hash, head.hash);
      assert.equal(entry.audit_checkpoint.jws, readSink(t.b.config.auditDir)[1].jws);
    } finally {
      await t.close();
    }
  });

  it('a running broker (startBroker) writes a checkpoint of its head when it stops', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-ckpt-'));
    try {
      const config = loadConfig({
        CORDON_ISSUER: 'http://127.0.0.1:1',
        DATABASE_URL: `sqlite://${join(dir, 'db.sqlite')}`,
        CORDON_POLICY_DIR: resolve('policies'),
        CORDON_KEY_DIR: join(dir, 'keys'),
        CORDON_AUDIT_DIR: join(dir, 'audit'),
        CORDON_LOG_LEVEL: 'silent',
      });
      const rb = await startBroker(config, { port: 0, gatewayPort: 0, log: pino({ level: 'silent' }) });
      await rb.b.db.transaction((tx) => appendAudit(tx, { at: rb.b.clock.now(), event: 'policy.load', decision: 'info' }));
      const head = (await auditRows.head(rb.b.db))!;
      assert.equal(existsSync(checkpointPath(config.auditDir)), false, 'no minute has passed yet');
      await rb.stop();
      const sink = readSink(config.auditDir);
      assert.equal(sink.length, 1);
      assert.deepEqual([sink[0].checkpoint?.seq, sink[0].checkpoint?.hash], [head.seq, head.hash]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
