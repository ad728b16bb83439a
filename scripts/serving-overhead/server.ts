/**
 * The server side of `npm run bench:serving-overhead`, in a process of its own (forked by the
 * script) so the benchmark client's CPU time never lands on the server's event loop. It serves
 * the tiny preset over the fixed-step backend and answers the parent over IPC:
 *   {type: 'reset'}  -> starts a measurement window (step count, event-loop delay histogram)
 *   {type: 'report'} -> {steps, elapsedMs, eventLoopP99Ms, eventLoopMaxMs} since the reset
 *   {type: 'stop'}   -> shuts down and exits
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { LlmEngine } from '../../src/engine/engine.js';
import { WorkerEngine } from '../../src/engine/worker/worker-engine.js';
import { loadModel } from '../../src/model/load.js';
import { silentLogger, startServer, type ServedEngine } from '../../src/server/index.js';
import { FixedStepBackend } from '../../test/support/fixed-step-backend.js';
import { recipe } from '../../test/support/worker-backends.js';

export interface ServerSettings {
  stepMs: number;
  maxTotalTokens: number;
  contextLength: number;
  /** As `sluice serve --engine-thread`. */
  engineThread: 'main' | 'worker';
  /** Whole-step overlap (the fixed-step backend can take it); false: as `sluice serve --disable-overlap-schedule`. */
  overlap: boolean;
}

export type ParentMessage = { type: 'reset' } | { type: 'report' } | { type: 'stop' };
export type ChildMessage =
  | { type: 'listening'; url: string }
  /** cpuMs: CPU time of the whole server process (every thread) in the window. */
  | { type: 'report'; steps: number; elapsedMs: number; eventLoopP99Ms: number; eventLoopMaxMs: number; cpuMs: number };

const settings = JSON.parse(process.argv[2]!) as ServerSettings;
const send = (message: ChildMessage) => process.send!(message);

// Shared with the engine thread, where the backend counts its steps.
const stepCounter = new Int32Array(new SharedArrayBuffer(4));
const model = loadModel({ modelPath: 'tiny' });
// The long-prompt rows need a context beyond the tiny preset's 4096 positions (the fixed-step backend has no positions).
const engineOptions = { maxTotalTokens: settings.maxTotalTokens, contextLength: settings.contextLength, allowLongContext: true, disableOverlapSchedule: !settings.overlap };
const engine: ServedEngine =
  settings.engineThread === 'worker'
    ? await WorkerEngine.start({ model, load: { modelPath: 'tiny' }, backend: recipe('fixedStep', settings.stepMs, stepCounter), engine: engineOptions, logger: silentLogger })
    : await LlmEngine.create(model, new FixedStepBackend({ stepMs: settings.stepMs, stepCounter }), { ...engineOptions, logger: silentLogger });
const server = await startServer({ engine, model, port: 0, log: silentLogger, logRequests: false, tokenizerThread: settings.engineThread === 'worker' });

const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();
let windowStart = { steps: 0, at: performance.now(), cpu: process.cpuUsage() };

process.on('message', async (message: ParentMessage) => {
  if (message.type === 'reset') {
    loopDelay.reset();
    windowStart = { steps: Atomics.load(stepCounter, 0), at: performance.now(), cpu: process.cpuUsage() };
  } else if (message.type === 'report') {
    send({
      type: 'report',
      steps: Atomics.load(stepCounter, 0) - windowStart.steps,
      elapsedMs: performance.now() - windowStart.at,
      eventLoopP99Ms: loopDelay.percentile(99) / 1e6,
      eventLoopMaxMs: loopDelay.max / 1e6,
      cpuMs: cpuMs(process.cpuUsage(windowStart.cpu)),
    });
  } else if (message.type === 'stop') {
    await server.shutdown(1000);
    process.exit(0);
  }
});
send({ type: 'listening', url: server.url });

function cpuMs(usage: NodeJS.CpuUsage): number {
  return (usage.user + usage.system) / 1000;
}
