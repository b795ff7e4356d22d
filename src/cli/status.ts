/**
 * `cordon status`: what is alive right now (sessions, tokens, backend credentials per session,
 * STS credentials revoked but still valid at AWS until they expire), gateway traffic and what the
 * gateway has open, the invariant check: no session or token may live longer than its policy
 * allows, and private files left too open.
 */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { Broker } from '../broker.ts';
import { agents } from '../store/agents.ts';
import { sessions } from '../store/sessions.ts';
import { tokens } from '../store/tokens.ts';
import { credentials, type CredentialRow } from '../store/credentials.ts';
import { sqliteFiles } from '../store/db.ts';
import { keyFiles, listKeys } from '../keys/keyring.ts';
import { auditRows } from '../store/audit.ts';
import { action, leaf, withBroker, type Ctx } from './context.ts';
import { gatewayStatus, gatewayStatusJson, printGatewayStatus } from './status-gateway.ts';
import { fmtDuration, fmtTime, fmtWhen, iso, kv, printJson, style, table } from './output.ts';

type CredRow = CredentialRow;

interface OverCap {
  kind: 'session' | 'token';
  id: string;
  agentId: string;
  policy: string;
  lifetimeSec: number;
  capSec: number;
}

interface LooseFile {
  path: string;
  mode: string;
  expected: string;
}

const octal = (mode: number): string => `0${mode.toString(8).padStart(3, '0')}`;

/**
 * Private files (data and key directories, database, keys) that group or others may read, write or
 * enter: installs made before Cordon set these modes itself, or loosened since. A warning only.
 */
function looseFiles(files: Array<{ path: string; expected: number }>): LooseFile[] {
  const out = new Map<string, LooseFile>();
  for (const f of files) {
    let mode: number;
    try {
      mode = statSync(f.path).mode & 0o777;
    } catch {
      continue; // absent (-wal, -shm when no connection is open): nothing to report
    }
    if ((mode & ~f.expected) !== 0 && !out.has(f.path)) out.set(f.path, { path: f.path, mode: octal(mode), expected: octal(f.expected) });
  }
  return [...out.values()];
}

/** Records that outlive their cap, found in SQL per policy so a large table is not read into memory. */
async function overCap(b: Broker): Promise<{ found: OverCap[]; unchecked: string[] }> {
  const found: OverCap[] = [];
  const all = await agents.list(b.db);
  const policies = new Set(all.map((a) => a.policy));
  const unchecked: string[] = [];
  for (const name of policies) {
    const p = b.policies.get(name);
    if (!p) {
      unchecked.push(name);
      continue;
    }
    const ids = all.filter((a) => a.policy === name).map((a) => a.id);
    for (let i = 0; i < ids.length; i += 500) {
      const part = ids.slice(i, i + 500);
      for (const s of await sessions.overCapOf(b.db, part, p.sessionTtl * 1000))
        found.push({ kind: 'session', id: s.sid, agentId: s.agentId, policy: name, lifetimeSec: (s.expiresAt - s.createdAt) / 1000, capSec: p.sessionTtl });
      for (const t of await tokens.overCap(b.db, part, p.tokenTtl * 1000))
        found.push({ kind: 'token', id: t.jti, agentId: t.clientId, policy: name, lifetimeSec: (t.expiresAt - t.issuedAt) / 1000, capSec: p.tokenTtl });
    }
  }
  return { found, unchecked };
}

export function registerStatus(program: Command, ctx: Ctx): void {
  leaf(program, 'status', 'live sessions, tokens and backend credentials, gateway traffic, and the lifetime invariant check').action(
    action(ctx, async ({ json }) => {
      const r = await withBroker(ctx, async (b) => {
        const now = b.clock.now();
        const [all, liveS, liveT, keys, head, gateway] = await Promise.all([
          agents.list(b.db),
          sessions.countLive(b.db, now),
          tokens.countLive(b.db, now),
          listKeys(b.db),
          auditRows.head(b.db),
          gatewayStatus(b, now),
        ]);
        const alive = await credentials.unexpired(b.db, now, 'live');
        const revokedAlive = await credentials.unexpired(b.db, now, 'revocation_unenforced');
        const failedAlive = await credentials.unexpired(b.db, now, 'revoke_failed');
        const caps = await overCap(b);
        const loose = looseFiles([...sqliteFiles(b.config.databaseUrl), ...keyFiles(resolve(b.config.keyDir))]);
        return { now, all, liveS, liveT, keys, head, gateway, alive, revokedAlive, failedAlive, caps, loose, issuer: b.config.issuer };
      });
      const names = new Map(r.all.map((a) => [a.id, a.name]));
      const nameOf = (id: string) => names.get(id) ?? id;
      const s = new Map(r.liveS.map((x) => [x.agentId, x.count]));
      const t = new Map(r.liveT.map((x) => [x.clientId, x.count]));
      const perAgent = r.all
        .map((a) => ({ client_id: a.id, name: a.name, policy: a.policy, status: a.status, live_sessions: s.get(a.id) ?? 0, live_tokens: t.get(a.id) ?? 0 }))
        .filter((a) => a.status !== 'revoked' || a.live_sessions || a.live_tokens);
      const bySid = new Map<string, CredRow[]>();
      for (const c of r.alive) bySid.set(c.sid, [...(bySid.get(c.sid) ?? []), c]);
      const credJson = (c: CredRow) => ({
        id: c.id,
        name: c.name,
        provider: c.provider,
        holder: { client_id: c.agentId, name: names.get(c.agentId) ?? null },
        state: c.state,
        expires_at: iso(c.expiresAt),
        revoked_at: iso(c.revokedAt),
        note: c.note,
      });
      const active = r.keys.find((k) => k.status === 'active');

      if (json) {
        await printJson(ctx.io, {
          now: iso(r.now),
          issuer: r.issuer,
          signing_key: active ? { kid: active.kid, alg: active.alg } : null,
          audit_rows: r.head?.seq ?? 0,
          agents: perAgent,
          live_credentials: [...bySid].map(([sid, cs]) => ({ sid, credentials: cs.map(credJson) })),
          revoked_sts_still_valid: r.revokedAlive.map((c) => ({ sid: c.sid, ...credJson(c) })),
          revoke_failed_still_valid: r.failedAlive.map((c) => ({ sid: c.sid, ...credJson(c) })),
          gateway: gatewayStatusJson(r.gateway),
          over_cap: r.caps.found.map((o) => ({
            kind: o.kind,
            id: o.id,
            agent: { client_id: o.agentId, name: names.get(o.agentId) ?? null },
            policy: o.policy,
            lifetime_sec: o.lifetimeSec,
            cap_sec: o.capSec,
          })),
          unchecked_policies: r.caps.unchecked,
          file_modes: r.loose,
        });
        return r.caps.found.length ? 1 : 0;
      }

      const st = style(ctx.io);
      const io = ctx.io;
      await io.out(
        kv([
          ['now', fmtTime(r.now)],
          ['issuer', r.issuer],
          ['signing key', active ? `${active.kid} (${active.alg})` : 'none: run `cordon init`'],
          ['audit rows', r.head?.seq ?? 0],
        ]),
      );

      await io.out(`\n${st.bold('Agents')}\n`);
      if (!perAgent.length) await io.out('  (none)\n');
      else
        await io.out(
          table(
            ['AGENT', 'POLICY', 'STATUS', 'LIVE SESSIONS', 'LIVE TOKENS'],
            perAgent.map((a) => [a.name, a.policy, a.status, a.live_sessions, a.live_tokens]),
          ),
        );

      await io.out(`\n${st.bold('Backend credentials alive')}\n`);
      if (!r.alive.length) await io.out('  (none)\n');
      else
        await io.out(
          table(
            ['SESSION', 'NAME', 'PROVIDER', 'HOLDER', 'EXPIRES'],
            r.alive.map((c) => [c.sid, c.name, c.provider, nameOf(c.agentId), fmtWhen(c.expiresAt, r.now)]),
          ),
        );

      await io.out(`\n${st.bold('Revoked STS credentials still valid at AWS until expiry')}\n`);
      if (!r.revokedAlive.length) await io.out('  (none)\n');
      else {
        await io.out(
          table(
            ['SESSION', 'NAME', 'HOLDER', 'REVOKED', 'VALID UNTIL', 'NOTE'],
            r.revokedAlive.map((c) => [c.sid, c.name, nameOf(c.agentId), fmtTime(c.revokedAt), fmtWhen(c.expiresAt, r.now), c.note]),
          ),
        );
        await io.out(st.yellow('  AWS cannot revoke one STS session; these are denied by an IAM policy where the broker may add one, and die at expiry.\n'));
      }
      if (r.failedAlive.length) {
        await io.out(`\n${st.bold(st.red('Backend revocations that failed (still valid until expiry)'))}\n`);
        await io.out(
          table(
            ['SESSION', 'NAME', 'PROVIDER', 'HOLDER', 'VALID UNTIL', 'NOTE'],
            r.failedAlive.map((c) => [c.sid, c.name, c.provider, nameOf(c.agentId), fmtWhen(c.expiresAt, r.now), c.note]),
          ),
        );
      }

      await printGatewayStatus(io, st, r.gateway);

      await io.out(`\n${st.bold('Lifetime caps')}\n`);
      if (!r.caps.found.length) await io.out(`  ${st.green('ok')}: no session outlives its policy's session_ttl, no token its holder's token_ttl\n`);
      else {
        await io.out(st.red(`  ${r.caps.found.length} record(s) outlive their cap: this must never happen\n`));
        await io.out(
          table(
            ['KIND', 'ID', 'AGENT', 'POLICY', 'LIFETIME', 'CAP'],
            r.caps.found.map((o) => [o.kind, o.id, nameOf(o.agentId), o.policy, fmtDuration(o.lifetimeSec), fmtDuration(o.capSec)]),
          ),
        );
      }
      if (r.caps.unchecked.length) await io.out(`  not checked (policy not loaded): ${r.caps.unchecked.join(', ')}\n`);

      await io.out(`\n${st.bold('File permissions')}\n`);
      if (!r.loose.length) await io.out(`  ${st.green('ok')}: data and key directories 0700, database and key files 0600 (or tighter)\n`);
      else {
        await io.out(st.yellow(`  ${r.loose.length} private file(s) more open than they should be: chmod them to the expected mode\n`));
        await io.out(
          table(
            ['PATH', 'MODE', 'EXPECTED'],
            r.loose.map((f) => [f.path, f.mode, f.expected]),
          ),
        );
      }
      return r.caps.found.length ? 1 : 0;
    }),
  );
}
