/** `cordon init` (data directory, database, migrations, keys) and `cordon serve`. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { migrate, openDb, sqlitePath } from '../store/db.ts';
import { ensureSigningKey, listKeys, loadSecretHashKey } from '../keys/keyring.ts';
import { lintPolicyDir } from '../policy/lint.ts';
import { systemClock } from '../clock.ts';
import { action, config, leaf, type Ctx } from './context.ts';
import { errorLine, printJson, table } from './output.ts';

interface Made {
  item: string;
  where: string;
  status: 'created' | 'exists' | 'applied' | 'up to date' | 'ok' | 'missing' | 'problems';
  detail?: string;
}

/** A database URL fit to print: no password. */
const safeUrl = (u: string): string => u.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');

export function registerInit(program: Command, ctx: Ctx): void {
  leaf(program, 'init', 'create the data directory, database schema, signing key and secret-hash key').action(
    action(ctx, async ({ json }) => {
      const cfg = config();
      const made: Made[] = [];
      const sqlite = cfg.databaseUrl.startsWith('sqlite:') ? sqlitePath(cfg.databaseUrl) : null;
      if (sqlite && sqlite !== ':memory:') {
        const dataDir = dirname(sqlite);
        made.push({ item: 'data directory', where: dataDir, status: existsSync(dataDir) ? 'exists' : 'created' });
        made.push({ item: 'database', where: sqlite, status: existsSync(sqlite) ? 'exists' : 'created', detail: 'SQLite (WAL)' });
      } else {
        made.push({ item: 'database', where: safeUrl(cfg.databaseUrl), status: 'ok', detail: sqlite ? 'in memory' : 'PostgreSQL' });
      }
      const keyDir = resolve(cfg.keyDir);
      const keyDirExisted = existsSync(keyDir);
      const hmacExisted = existsSync(join(keyDir, 'client-secret-hmac.key'));

      const db = openDb(cfg.databaseUrl);
      try {
        const applied = await migrate(db);
        made.push({ item: 'migrations', where: applied.length ? applied.join(', ') : 'schema', status: applied.length ? 'applied' : 'up to date' });
        const before = (await listKeys(db)).filter((k) => k.status === 'active');
        made.push({ item: 'key directory', where: keyDir, status: keyDirExisted ? 'exists' : 'created', detail: 'mode 0700' });
        await ensureSigningKey(db, cfg.keyDir, cfg.keyAlg, systemClock);
        const active = (await listKeys(db)).find((k) => k.status === 'active')!;
        made.push({
          item: 'signing key',
          where: join(keyDir, `${active.kid}.jwk.json`),
          status: before.length ? 'exists' : 'created',
          detail: `kid ${active.kid}, ${active.alg}`,
        });
        loadSecretHashKey(cfg.keyDir);
        made.push({
          item: 'secret-hash key',
          where: join(keyDir, 'client-secret-hmac.key'),
          status: hmacExisted ? 'exists' : 'created',
          detail: 'HMAC-SHA256, mode 0600',
        });
      } finally {
        await db.destroy();
      }

      // Policies are not created here, only checked: the broker will refuse to start on a bad set.
      const policyDir = resolve(cfg.policyDir);
      if (!existsSync(policyDir)) {
        made.push({ item: 'policies', where: policyDir, status: 'missing', detail: 'create it and add policy files before `cordon serve`' });
      } else {
        const { policies, problems } = await lintPolicyDir(cfg.policyDir);
        made.push({
          item: 'policies',
          where: policyDir,
          status: problems.length ? 'problems' : 'ok',
          detail: problems.length
            ? `${problems.length} problem(s): run \`cordon policy lint\``
            : `${policies.length} loaded (${policies.map((p) => p.name).join(', ') || 'none'})`,
        });
      }

      if (json) {
        await printJson(ctx.io, { ok: true, made });
      } else {
        await ctx.io.out(
          table(
            ['ITEM', 'STATUS', 'WHERE', 'DETAIL'],
            made.map((m) => [m.item, m.status, m.where, m.detail]),
          ),
        );
        await ctx.io.out(`\nReady. Register an agent with: cordon agent register NAME --policy POLICY\n`);
      }
    }),
  );
}

export function registerServe(program: Command, ctx: Ctx): void {
  leaf(program, 'serve', 'run the broker (OAuth token endpoint, introspection, revocation, credentials)')
    .option('--port <port>', 'listen on this port instead of PORT')
    .action(
      action(ctx, async ({ opts }) => {
        const cfg = config();
        const port = portOption(opts.port);
        // Loaded here so that other commands do not pay for (or hear from) the HTTP stack.
        const { startBroker } = await import('../runtime.ts');
        const r = await startBroker(cfg, { port });
        r.b.log.info({ issuer: cfg.issuer, listen: r.url, gateway: r.gateway?.url ?? 'off', policies: r.b.policies.names() }, 'cordon broker listening');
        await serveUntilSignal(ctx, r);
      }),
    );
}

export function registerGateway(program: Command, ctx: Ctx): void {
  leaf(program, 'gateway', "run the gateway alone (CORDON_GATEWAY_PORT) on the broker's database, policies and providers")
    .option('--port <port>', 'listen on this port instead of CORDON_GATEWAY_PORT')
    .action(
      action(ctx, async ({ opts }) => {
        const cfg = config();
        const port = portOption(opts.port);
        if (port === undefined && cfg.gatewayPort === null) throw new Error('CORDON_GATEWAY_PORT is off: set a port (or pass --port) to run the gateway');
        const { startGatewayAlone } = await import('../runtime.ts');
        const r = await startGatewayAlone(cfg, { port });
        r.b.log.info({ listen: r.gateway.url, policies: r.b.policies.names() }, 'cordon gateway listening');
        await serveUntilSignal(ctx, r);
      }),
    );
}

/** `--port`: 0 to 65535, or undefined when not given. */
function portOption(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d{1,5}$/.test(raw) || Number(raw) > 65535) throw new Error(`--port must be 0 to 65535, got "${raw}"`);
  return Number(raw);
}

/**
 * Serves until SIGINT or SIGTERM, then stops. A shutdown that fails (the final audit checkpoint
 * cannot be written, say) is one line and exit 1, not an unhandled rejection.
 */
async function serveUntilSignal(ctx: Ctx, r: { stop(): Promise<void> }): Promise<never> {
  const stop = (): void => {
    r.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        ctx.io.err(`cordon: ${errorLine(e)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  return new Promise<never>(() => {});
}
