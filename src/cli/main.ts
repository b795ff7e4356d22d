import { Command, CommanderError } from 'commander';
import { CliError, errorLine, processIo, type Io } from './output.ts';
import type { Ctx } from './context.ts';
import { registerGateway, registerInit, registerServe } from './init.ts';
import { registerAgent } from './agent.ts';
import { registerPolicy } from './policy.ts';
import { registerSession } from './session.ts';
import { registerToken } from './token.ts';
import { registerRevoke } from './revoke.ts';
import { registerAudit } from './audit.ts';
import { registerKeys } from './keys.ts';
import { registerStatus } from './status.ts';
import { registerCreds, registerExec } from './creds.ts';
import { registerDemo } from './demo.ts';
import { registerMcp } from './mcp.ts';

/** Builds the command tree. A fresh one per call, so tests can run `main` many times in one process. */
export function buildProgram(ctx: Ctx): Command {
  const program = new Command('cordon')
    .description('Cordon: a credential broker that contains AI agents.')
    .option('--json', 'machine-readable output')
    .enablePositionalOptions() // lets `exec` pass everything after the command through untouched
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => void ctx.io.out(s),
      writeErr: (s) => ctx.io.err(s),
      // Commander's own parse errors ("error: unknown option …") become our one line.
      outputError: (s, write) =>
        write(
          `cordon: ${s
            .replace(/^error:\s*/, '')
            .replace(/\s*\n\s*/g, ' ')
            .trim()}\n`,
        ),
    });
  program.configureHelp({ sortSubcommands: false, showGlobalOptions: true });
  registerInit(program, ctx);
  registerServe(program, ctx);
  registerGateway(program, ctx);
  registerDemo(program, ctx);
  registerAgent(program, ctx);
  registerPolicy(program, ctx);
  registerSession(program, ctx);
  registerToken(program, ctx);
  registerRevoke(program, ctx);
  registerAudit(program, ctx);
  registerKeys(program, ctx);
  registerStatus(program, ctx);
  registerCreds(program, ctx);
  registerExec(program, ctx);
  registerMcp(program, ctx);
  // Every subcommand inherits the error handling and output of the program.
  const inherit = (c: Command) => {
    for (const sub of c.commands) {
      sub.exitOverride().configureOutput(program.configureOutput()).showSuggestionAfterError();
      inherit(sub);
    }
  };
  inherit(program);
  return program;
}

/** Entry point; returns the exit code. `io` defaults to the process streams. */
export async function main(argv: string[], io?: Io): Promise<number> {
  if (!io) guardPipe();
  const ctx: Ctx = { io: io ?? processIo(), exitCode: 0 };
  const program = buildProgram(ctx);
  if (argv.length === 0) {
    program.outputHelp();
    return 0;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return ctx.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are successes; everything else commander refuses is a usage error (already printed).
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return 0;
      return e.exitCode === 0 ? 0 : 2;
    }
    ctx.io.err(`cordon: ${errorLine(e)}\n`);
    // For bug reports only: the stack, when asked for.
    if (process.env.CORDON_DEBUG && e instanceof Error && !(e instanceof CliError)) ctx.io.err(`${e.stack}\n`);
    return e instanceof CliError ? e.exitCode : 1;
  }
}

let pipeGuarded = false;
/** `cordon audit export | head` closes the pipe early; that is not an error worth a stack trace. */
function guardPipe(): void {
  if (pipeGuarded) return;
  pipeGuarded = true;
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
}
