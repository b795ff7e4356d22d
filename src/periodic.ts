/** Starts an interval; returns its cancel function. Tests inject one and drive the ticks themselves. */
export type Every = (tick: () => Promise<unknown>, ms: number) => () => void;

/** setInterval, unref'd: a background job alone never keeps the process alive. */
export const realEvery: Every = (tick, ms) => {
  const t = setInterval(() => void tick(), ms);
  t.unref();
  return () => clearInterval(t);
};

export interface PeriodicJob<T> {
  /** Runs the job now (after a run already under way). */
  runNow(): Promise<T | undefined>;
  /** Stops the ticks, waits for a run under way, and runs once more when `finalRun` was asked for. */
  stop(): Promise<void>;
}

/**
 * A background job (the sweeper, audit checkpoints): run every `intervalMs`, never two at once; a
 * failure goes to `onError` and the next tick tries again.
 */
export function periodic<T>(
  job: () => Promise<T>,
  opts: { intervalMs: number; onError: (e: unknown) => void; every?: Every; runAtStart?: boolean; finalRun?: boolean },
): PeriodicJob<T> {
  let running: Promise<T | undefined> | undefined;
  const run = (): Promise<T | undefined> => {
    running ??= job()
      .catch((e: unknown) => {
        opts.onError(e);
        return undefined;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const cancel = (opts.every ?? realEvery)(run, opts.intervalMs);
  if (opts.runAtStart) void run();
  return {
    async runNow() {
      if (running) await running;
      return run();
    },
    async stop() {
      cancel();
      if (running) await running;
      if (opts.finalRun) await run();
    },
  };
}
