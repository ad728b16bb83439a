/**
 * The engine's own host time per decode step (scheduling, batch assembly, sampling bookkeeping,
 * detokenization, stop checks, streaming to consumers) at 1, 64 and 256 running requests, with
 * the model's compute taken out by the instant backend.
 *
 *   npm run bench:engine [-- --json] [--steps N] [--only RUNNING]
 *
 * Run with --expose-gc (the npm script does): the garbage of start-up (the tokenizer's load
 * leaves ~100 MB of it) is collected before the measured steps, so that a full collection it
 * would set off cannot land in the window of one tree and not of another. The full collections
 * the steps themselves cause stay in the window, and are counted.
 */
import { performance, PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';
import type { ForwardBatch, StepOutput } from '../src/engine/backend.js';
import { InstantBackend } from '../test/support/instant-backend.js';
import { LlmEngine } from '../src/engine/engine.js';
import { loadModel } from '../src/model/load.js';
import { Rng } from '../src/model/rng.js';
import { scriptOptions } from './script-options.js';

const options = scriptOptions('bench:engine', {
  json: { type: 'boolean', default: false },
  only: { type: 'string' },
  steps: { type: 'string', default: '400' },
});
const batchSizes = options.only !== undefined ? [Number(options.only)] : [1, 64, 256];
const promptTokens = 256;
const warmupSteps = 50;
const json = options.json;
const measuredSteps = Number(options.steps);
const collectGarbage = (globalThis as { gc?: () => void }).gc;
if (!collectGarbage) throw new Error('bench:engine needs node --expose-gc (npm run bench:engine passes it)');

/** Full (mark-compact) collections and their pause time, by when they started. */
const majorCollections: { at: number; ms: number }[] = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if ((entry as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) majorCollections.push({ at: entry.startTime, ms: entry.duration });
  }
}).observe({ entryTypes: ['gc'] });

/** Records when each pure decode step (every running request, one token each) starts, in wall and CPU time. */
class TimedInstantBackend extends InstantBackend {
  readonly decodeStepStarts: number[] = [];
  readonly decodeStepCpu: number[] = [];
  constructor(private readonly running: number) {
    super();
  }
  override async forward(batch: ForwardBatch): Promise<StepOutput> {
    if (batch.kvLens.length === this.running && batch.tokenIds.length === this.running) {
      if (this.decodeStepStarts.length === warmupSteps) collectGarbage!();
      this.decodeStepStarts.push(performance.now());
      const cpu = process.cpuUsage();
      this.decodeStepCpu.push((cpu.user + cpu.system) / 1000);
    }
    return super.forward(batch);
  }
}

interface Measurement {
  medianUs: number;
  meanUs: number;
  cpuUs: number;
  /** Full collections that started within the measured steps. */
  majorGcs: number;
  majorGcMs: number;
}

async function measure(running: number): Promise<Measurement> {
  const model = loadModel({ modelPath: 'tiny' });
  const backend = new TimedInstantBackend(running);
  const maxNewTokens = warmupSteps + measuredSteps + 10;
  const engine = await LlmEngine.create(model, backend, {
    maxTotalTokens: running * (promptTokens + maxNewTokens + 8),
    maxRunningRequests: running,
    logger: { warn: () => {} },
  });
  const rng = new Rng(1);
  const streams = Array.from({ length: running }, (_, i) =>
    engine.generate({
      promptTokenIds: Array.from({ length: promptTokens }, () => 1000 + Math.floor(rng.next() * 50000)),
      params: { maxNewTokens, temperature: 0.8, topP: 0.95, seed: i, ignoreEos: true, stop: ['\n\n###'] },
    }),
  );
  let textLength = 0;
  await Promise.all(
    streams.map(async (stream) => {
      for await (const delta of stream) textLength += delta.text.length;
    }),
  );
  await engine.close();
  const window = (times: number[]) => {
    const w = times.slice(warmupSteps, warmupSteps + measuredSteps + 1);
    if (w.length < 2 || textLength === 0) throw new Error(`too few decode steps measured at ${running} running`);
    return w;
  };
  const round = (ms: number) => Math.round(ms * 10000) / 10;
  // The median step: robust to the process being descheduled now and then on a shared machine.
  const wall = window(backend.decodeStepStarts);
  const steps = wall.slice(1).map((t, i) => t - wall[i]!).sort((a, b) => a - b);
  const cpu = window(backend.decodeStepCpu);
  await new Promise((resolve) => setImmediate(resolve)); // the observer's last entries
  const inWindow = majorCollections.filter((gc) => gc.at >= wall[0]! && gc.at <= wall.at(-1)!);
  return {
    medianUs: round(steps[steps.length >> 1]!),
    meanUs: round((wall.at(-1)! - wall[0]!) / (wall.length - 1)),
    cpuUs: round((cpu.at(-1)! - cpu[0]!) / (cpu.length - 1)),
    majorGcs: inWindow.length,
    majorGcMs: Math.round(inWindow.reduce((sum, gc) => sum + gc.ms, 0)),
  };
}

// The figure is the median wall time of a decode step. Beside it: the mean wall time (which also
// counts garbage collection pauses and any time the OS gave the cores to other processes), the
// mean CPU time of this process (all threads: garbage collection included, whose concurrent
// marking runs on V8's helper threads) and the full collections within the measured steps.
const results: Record<string, Measurement> = {};
for (const running of batchSizes) results[running] = await measure(running);
const pick = (key: keyof Measurement) => Object.fromEntries(batchSizes.map((n) => [n, results[n]![key]]));
if (json) {
  process.stdout.write(
    `${JSON.stringify({ us_per_step: pick('medianUs'), mean_us_per_step: pick('meanUs'), cpu_us_per_step: pick('cpuUs'), major_gcs: pick('majorGcs'), major_gc_ms: pick('majorGcMs') })}\n`,
  );
} else {
  process.stdout.write(`engine host time per decode step (instant backend, tiny model, ${promptTokens}-token prompts, ${measuredSteps} steps)\n`);
  for (const running of batchSizes) {
    const m = results[running]!;
    process.stdout.write(`  ${String(running).padStart(3)} running: ${m.medianUs} us/step (mean ${m.meanUs}, cpu ${m.cpuUs}; ${m.majorGcs} full collections, ${m.majorGcMs} ms)\n`);
  }
  process.stdout.write('  target: under 1000 us/step at 256 running\n');
}
