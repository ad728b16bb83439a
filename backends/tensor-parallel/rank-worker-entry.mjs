// A tensor-parallel rank's thread: a worker does not inherit the main thread's TypeScript
// loader, so it registers tsx itself (as bin/sluice.mjs does) before loading the rank.
import { register } from 'tsx/esm/api';

register();
await import('./rank-worker.ts');
