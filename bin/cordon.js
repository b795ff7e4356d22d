#!/usr/bin/env node
// The CLI ships as TypeScript; tsx's loader compiles it on the fly so `npx cordon` works after a plain install.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
