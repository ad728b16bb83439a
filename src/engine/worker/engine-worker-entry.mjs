// The engine thread's entry point: a worker does not inherit the main thread's TypeScript loader,
// so it registers tsx itself (as bin/sluice.mjs does) before loading the engine.
import { register } from 'tsx/esm/api';

register();
await import('./engine-worker.ts');
