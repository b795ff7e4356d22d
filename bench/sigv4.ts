/** `node --import tsx bench/sigv4.ts [--n=10000]`: prints what SigV4 costs the gateway per call (bench/lib/sigv4.ts). */
import { sigv4Bench } from './lib/sigv4.ts';

await sigv4Bench(Number(process.argv.find((a) => a.startsWith('--n='))?.slice(4) ?? 10_000), true);
