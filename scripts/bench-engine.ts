/**
 * The engine's own host time per decode step (scheduling, batch assembly, sampling bookkeeping,
 * detokenization, stop checks, streaming to consumers) at 1, 64 and 256 running requests, with
 * the model's compute taken out by the instant backend.
 *
 *   npm run bench:engine [-- --json] [-- --steps N]
 */
import { performance } from 'node:perf_hooks';
import type { ForwardBatch, StepOutput } from '../backends/backend.js';
import { InstantBackend } from '../backends/instant/instant-backend.js';
import { LlmEngine } from '../src/engine/engine.js';
import { loadModel } from '../src/model/load.js';
import { Rng } from '../src/model/rng.js';

const onlyArg = process.argv.indexOf('--only');
const batchSizes = onlyArg >= 0 ? [Number(process.argv[onlyArg + 1])] : [1, 64, 256];
const promptTokens = 256;
const warmupSteps = 50;
const args = process.argv.slice(2);
const json = args.includes('--json');
const stepsArg = args.indexOf('--steps');
const measuredSteps = stepsArg >= 0 ? Number(args[stepsArg + 1]) : 400;

/** Records when each pure decode step (every running request, one token each) starts. */
class TimedInstantBackend extends InstantBackend {
  readonly decodeStepStarts: number[] = [];
  constructor(private readonly running: number) {
    super();
  }
  override async forward(batch: ForwardBatch): Promise<StepOutput> {
    if (batch.kvLens.length === this.running && batch.tokenIds.length === this.running) this.decodeStepStarts.push(performance.now());
    return super.forward(batch);
  }
}

async function measure(running: number): Promise<number> {
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
  const starts = backend.decodeStepStarts.slice(warmupSteps, warmupSteps + measuredSteps + 1);
  if (starts.length < 2 || textLength === 0) throw new Error(`too few decode steps measured at ${running} running`);
  return ((starts.at(-1)! - starts[0]!) / (starts.length - 1)) * 1000;
}

const usPerStep: Record<string, number> = {};
for (const running of batchSizes) usPerStep[running] = Math.round((await measure(running)) * 10) / 10;
if (json) {
  process.stdout.write(`${JSON.stringify({ us_per_step: usPerStep })}\n`);
} else {
  process.stdout.write('engine host time per decode step (instant backend, tiny model, Llama 3 tokenizer)\n');
  for (const running of batchSizes) process.stdout.write(`  ${String(running).padStart(3)} running: ${usPerStep[running]} us/step\n`);
  process.stdout.write('  target: under 1000 us/step at 256 running\n');
}
