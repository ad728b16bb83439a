/**
 * The server side of `npm run bench:serving-overhead`, in a process of its own (forked by the
 * script) so the benchmark client's CPU time never lands on the server's event loop. It serves
 * the tiny preset over the fixed-step backend and answers the parent over IPC
 * (measurement-window.ts).
 */
import { LlmEngine } from '../../src/engine/engine.js';
import { WorkerEngine } from '../../src/engine/worker/worker-engine.js';
import { loadModel } from '../../src/model/load.js';
import { silentLogger, startServer, type ServedEngine } from '../../src/server/index.js';
import { FixedStepBackend } from '../../test/support/fixed-step-backend.js';
import { recipe } from '../../test/support/worker-backends.js';
import { answerParent } from './measurement-window.js';

export interface ServerSettings {
  stepMs: number;
  maxTotalTokens: number;
  contextLength: number;
  /** As `sluice serve --engine-thread`. */
  engineThread: 'main' | 'worker';
  /** Whole-step overlap (the fixed-step backend can take it); false: as `sluice serve --disable-overlap-schedule`. */
  overlap: boolean;
  /** As `sluice serve --stream-interval`. */
  streamInterval: number;
}

const settings = JSON.parse(process.argv[2]!) as ServerSettings;

// Shared with the engine thread, where the backend counts its steps.
const stepCounter = new Int32Array(new SharedArrayBuffer(4));
const model = loadModel({ modelPath: 'tiny' });
// The long-prompt rows need a context beyond the tiny preset's 4096 positions (the fixed-step backend has no positions).
const engineOptions = { maxTotalTokens: settings.maxTotalTokens, contextLength: settings.contextLength, allowLongContext: true, disableOverlapSchedule: !settings.overlap };
const engine: ServedEngine =
  settings.engineThread === 'worker'
    ? await WorkerEngine.start({ model, load: { modelPath: 'tiny' }, backend: recipe('fixedStep', settings.stepMs, stepCounter), engine: engineOptions, logger: silentLogger })
    : await LlmEngine.create(model, new FixedStepBackend({ stepMs: settings.stepMs, stepCounter }), { ...engineOptions, logger: silentLogger });
const server = await startServer({ engine, model, port: 0, log: silentLogger, logRequests: false, tokenizerThread: settings.engineThread === 'worker', streamInterval: settings.streamInterval });

answerParent(server.url, stepCounter, () => server.shutdown(1000));
