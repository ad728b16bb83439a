// Worker threads do not inherit the main thread's TypeScript loader: register tsx here, then load the worker.
import { register } from 'tsx/esm/api';

register();
const { serveBlockJobs } = await import('./block-worker.ts');
serveBlockJobs();
