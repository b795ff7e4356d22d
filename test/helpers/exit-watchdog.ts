/**
 * Mocha runs without `exit: true`, so it ends only when every test has closed what it opened.
 * A leaked handle (server, pool, timer, child process, keep-alive socket) would then hang the run
 * without a word; this root hook turns that into a failure that names what is still open.
 */

/** Longer than anything that winds down by itself after the last test (an SDK's 5 s connect timer). */
const GRACE_MS = 10_000;

export const mochaHooks = {
  afterAll(): void {
    // unref'd: it fires only if something else still keeps the process alive.
    setTimeout(() => {
      const open = process.getActiveResourcesInfo().join(', ');
      process.stderr.write(`mocha did not end by itself ${GRACE_MS / 1000} s after the last test; still open (stdio included): ${open}\n`);
      // Mocha's own exit listener sets the exit code to the failure count; this one runs after it.
      process.once('exit', () => (process.exitCode = 1));
      process.exit(1);
    }, GRACE_MS).unref();
  },
};
