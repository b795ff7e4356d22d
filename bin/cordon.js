#!/usr/bin/env node
// The CLI runs the compiled package (dist/, built by `npm run build`, which `npm install` runs as `prepare`).
import { existsSync } from 'node:fs';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('cordon: the package is not built (dist/ is missing): run `npm run build` in the cordon directory\n');
  process.exit(1);
}
const { main: run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
