/**
 * The engine's own host time per decode step (scheduling, batch assembly, sampling bookkeeping,
 * detokenization, stop checks, streaming to consumers) at 1, 64 and 256 running requests, with
 * the model's compute taken out by the instant backend.
 *
 *   npm run bench:engine [-- --json] [--steps N] [--only RUNNING]
 */
import { performance } from 'node:perf_hooks';
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

/** Records when each pure decode step (every running request, one token each) starts, in wall and CPU time. */
class TimedInstantBackend extends InstantBackend {
  readonly decodeStepStarts: number[] = [];
  readonly decodeStepCpu: number[] = [];
  constructor(private readonly running: number) {
    super();
  }
  override async forward(batch: ForwardBatch): Promise<StepOutput> {
    if (batch.kvLens.length === this.running && batch.tokenIds.length === this.running) {
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
  return {
    medianUs: round(steps[steps.length >> 1]!),
    meanUs: round((wall.at(-1)! - wall[0]!) / (wall.length - 1)),
    cpuUs: round((cpu.at(-1)! - cpu[0]!) / (cpu.length - 1)),
  };
}

// The figure is the median wall time of a decode step. Beside it: the mean wall time (which also
// counts garbage collection pauses and any time the OS gave the cores to other processes) and
// the mean CPU time of this process (all threads: garbage collection included).
const results: Record<string, Measurement> = {};
for (const running of batchSizes) results[running] = await measure(running);
const pick = (key: keyof Measurement) => Object.fromEntries(batchSizes.map((n) => [n, results[n]![key]]));
if (json) {
  process.stdout.write(`${JSON.stringify({ us_per_step: pick('medianUs'), mean_us_per_step: pick('meanUs'), cpu_us_per_step: pick('cpuUs') })}\n`);
} else {
  process.stdout.write(`engine host time per decode step (instant backend, tiny model, ${promptTokens}-token prompts, ${measuredSteps} steps)\n`);
  for (const running of batchSizes) {
    const m = results[running]!;
    process.stdout.write(`  ${String(running).padStart(3)} running: ${m.medianUs} us/step (mean ${m.meanUs}, cpu ${m.cpuUs})\n`);
  }
  process.stdout.write('  target: under 1000 us/step at 256 running\n');
}
