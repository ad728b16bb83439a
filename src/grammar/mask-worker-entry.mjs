// The mask worker's entry point: a worker does not inherit the main thread's TypeScript loader,
// so it registers tsx itself before loading the worker.
import { register } from 'tsx/esm/api';

register();
await import('./mask-worker-thread.ts');
