/** What every command shares: the output, the environment, and a broker opened for one command. */
import { existsSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import type { Command } from 'commander';
import { loadConfig, readEnv, DEFAULTS, type Config } from '../config/index.ts';
import { ConfigError, CordonError } from '../errors.ts';
import { Attempt } from '../audit/attempt.ts';
import { recordRefusal } from '../audit/refusals.ts';
import { openBroker, closeBroker, type Broker } from '../broker.ts';
import { sqlitePath } from '../store/db.ts';
import type { Io } from './output.ts';

export interface Ctx {
  io: Io;
  /** The exit code the command decided on; 0 unless it says otherwise. */
  exitCode: number;
  /** The command running (`agent.register`), the attempt a refusal's audit row names. */
  command?: string;
}

/** process.env over .env in the working directory, as the broker reads it. */
export const env = (): Record<string, string | undefined> => readEnv();

export const config = (): Config => loadConfig(readEnv());

/** Warnings and errors from the broker core go to stderr as pino lines; stdout stays the command's own. */
export function cliLogger(io: Io, level: string = 'warn'): Logger {
  return pino({ level, redact: ['req.headers.authorization', '*.client_secret'] }, { write: (s: string) => io.err(s) });
}

/**
 * Opens the database, keys and policies for one command and always closes them. Only `create`
 * commands (registering an agent) may bring a new SQLite database into being: any other command
 * pointed at a file that does not exist — a mistyped DATABASE_URL — would otherwise make an empty
 * database and a signing key there and answer from it.
 */
export async function withBroker<T>(ctx: Ctx, fn: (b: Broker) => Promise<T>, opts: { create?: boolean } = {}): Promise<T> {
  const cfg = config();
  if (!opts.create) requireExistingDatabase(cfg);
  const b = await openBroker(cfg, { log: cliLogger(ctx.io) });
  try {
    return await fn(b);
  } catch (e) {
    // The command is this request's entry point: a refusal is written once, here, as `cli.<command>`.
    if (e instanceof CordonError && e.code !== 'server_error') {
      await recordRefusal(b, new Attempt(`cli.${ctx.command ?? 'command'}`).note({ by: 'cli' }), e).catch((err: Error) =>
        ctx.io.err(`cordon: warning: could not audit the refusal (${err.message})\n`),
      );
    }
    throw e;
  } finally {
    await closeBroker(b);
  }
}

function requireExistingDatabase(cfg: Config): void {
  if (!cfg.databaseUrl.startsWith('sqlite:')) return; // PostgreSQL refuses a database that does not exist by itself
  const path = sqlitePath(cfg.databaseUrl);
  if (path === ':memory:' || existsSync(path)) return;
  throw new ConfigError('DATABASE_URL', `there is no database at ${path}; run \`cordon init\` (or start the broker once) first, or correct DATABASE_URL`);
}

/** `--json` may sit on the command or before it (`cordon --json agent list`). */
export const wantsJson = (cmd: Command): boolean => Boolean(cmd.optsWithGlobals().json);

/** The broker's base URL for commands that talk to a running broker. */
export function issuerUrl(override?: string): string {
  const v = (override ?? env().CORDON_ISSUER ?? DEFAULTS.CORDON_ISSUER).trim();
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError(override ? '--issuer' : 'CORDON_ISSUER', `is not a valid URL: "${v}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new ConfigError(override ? '--issuer' : 'CORDON_ISSUER', `must use http: or https:, got ${u.protocol}`);
  return v.replace(/\/+$/, '');
}

/** A leaf command: every one takes `--json`. */
export const leaf = (parent: Command, nameAndArgs: string, description: string): Command =>
  parent.command(nameAndArgs).description(description).option('--json', 'machine-readable output');

export interface ActionInput {
  args: string[];
  // Commander's option bag; each command reads its own keys.
  opts: Record<string, any>;
  json: boolean;
  cmd: Command;
}

/** Adapts a command body to commander: positional args, options, `--json`, and the exit code it returns. */
export const action =
  (ctx: Ctx, fn: (a: ActionInput) => Promise<number | void>) =>
  async (...raw: unknown[]): Promise<void> => {
    const cmd = raw[raw.length - 1] as Command;
    const names: string[] = [];
    for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
    ctx.command = names.join('.');
    const opts = raw[raw.length - 2] as Record<string, unknown>;
    const args = raw.slice(0, -2) as string[];
    const code = await fn({ args, opts, json: wantsJson(cmd), cmd });
    ctx.exitCode = code ?? 0;
  };
