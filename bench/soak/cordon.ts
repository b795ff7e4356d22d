/** `cordon` from this checkout's source: bin/cordon.js runs the built dist/, which may be older than the code under test. */
import { main } from '../../src/cli/main.ts';

process.exitCode = await main(process.argv.slice(2));
