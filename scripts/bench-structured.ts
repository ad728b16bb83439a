/**
 * Structured output's costs, on the cpu backend unless --backend says otherwise:
 * 1. grammar compile time per schema of the 33-schema test suite, cold and from the cache;
 * 2. per decode step at 1 and 64 running requests (the `small` preset): the step unconstrained,
 *    then with every sequence constrained by a JSON schema, the masks computed on the mask worker
 *    (overlapping the step) and on the engine's thread: the mask work per step, the time the
 *    backend waited for the masks at sampling (the work not hidden), and the step's growth; on
 *    cuda also the worker's masks with the launch waiting for them (SLUICE_CUDA_MASK_OVERLAP=0,
 *    the path before the overlap);
 * 3. tokens jump-forward appends without a decode step on the schema suite (the `tiny` preset).
 *
 *   npm run bench:structured [-- --steps N] [--model small] [--backend cpu]
 *                            [--sections compile,steps,jump-forward]
 * On a GPU: npm run bench:structured -- --backend cuda --model llama-3.1-8b --sections steps
 */
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { withVariant, type CudaVariant } from '../backends/cuda/variants.js';
import { backendNames, createBackend, type BackendName } from '../backends/index.js';
import type { Backend, ForwardBatch, StepOutput } from '../src/engine/backend.js';
import { LlmEngine } from '../src/engine/engine.js';
import type { GrammarSpec } from '../src/engine/types.js';
import { GrammarCompiler } from '../src/grammar/grammar-compiler.js';
import { loadModel } from '../src/model/load.js';
import { schemaSuite } from '../test/structured/schemas.js';
import { scriptOptions } from './script-options.js';

const options = scriptOptions('bench:structured', {
  steps: { type: 'string', default: '32' },
  model: { type: 'string', default: 'small' },
  backend: { type: 'string', default: 'cpu' },
  sections: { type: 'string', default: 'compile,steps,jump-forward' },
});
const steps = Number(options.steps);
const backendName = options.backend as BackendName;
if (!backendNames.includes(backendName)) {
  process.stderr.write(`bench:structured: unknown --backend ${options.backend} (known: ${backendNames.join(', ')})\n`);
  process.exit(2);
}
const knownSections = ['compile', 'steps', 'jump-forward'];
const sections = new Set(options.sections.split(','));
for (const name of sections) {
  if (!knownSections.includes(name)) {
    process.stderr.write(`bench:structured: unknown section ${name} in --sections (known: ${knownSections.join(', ')})\n`);
    process.exit(2);
  }
}
const load = () => loadavg().map((x) => x.toFixed(1)).join(' ');
const quiet = { warn: () => {} };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const ms = (x: number) => x.toFixed(2);

console.log(`bench:structured (${new Date().toISOString().slice(0, 10)}), load average ${load()}`);

// 1. Compile time.
if (sections.has('compile')) {
  const model = loadModel({ modelPath: 'tiny' });
  let t = performance.now();
  const compiler = await GrammarCompiler.create(model.tokenizer, model.config.vocabSize, model.stopTokenIds);
  const setupMs = performance.now() - t;
  const cold: number[] = [];
  const cached: number[] = [];
  for (const schema of Object.values(schemaSuite)) {
    const spec: GrammarSpec = { type: 'json_schema', schema: JSON.stringify(schema), param: 'bench' };
    t = performance.now();
    await compiler.compile(spec);
    cold.push(performance.now() - t);
    t = performance.now();
    await compiler.compile(spec);
    cached.push(performance.now() - t);
  }
  const total = cold.reduce((a, b) => a + b, 0);
  console.log(`\ncompile (${cold.length} schemas, Llama 3 vocabulary of ${model.config.vocabSize}); load average ${load()}`);
  console.log(`  xgrammar load + tokenizer info: ${ms(setupMs)} ms (once per process)`);
  console.log(`  cold: median ${ms(median(cold))} ms, max ${ms(Math.max(...cold))} ms, total ${ms(total)} ms`);
  console.log(`  cached: median ${ms(median(cached))} ms, max ${ms(Math.max(...cached))} ms`);
  compiler.dispose();
}

/** Times the steps where every running sequence decodes one token. */
class TimedBackend implements Backend {
  readonly decodeStepMs: number[] = [];
  steps = 0;
  constructor(
    private readonly inner: Backend,
    private readonly running: number,
  ) {}
  get name() {
    return this.inner.name;
  }
  get description() {
    return this.inner.description;
  }
  load = (m: Parameters<Backend['load']>[0]) => this.inner.load(m);
  kvCapacity = (b: Parameters<Backend['kvCapacity']>[0]) => this.inner.kvCapacity(b);
  allocateKvCache = (s: Parameters<Backend['allocateKvCache']>[0]) => this.inner.allocateKvCache(s);
  close = () => this.inner.close();
  async forward(batch: ForwardBatch): Promise<StepOutput> {
    this.steps++;
    const t = performance.now();
    const out = await this.inner.forward(batch);
    if (batch.kvLens.length === this.running && batch.tokenIds.length === this.running) this.decodeStepMs.push(performance.now() - t);
    return out;
  }
}

// 2. Mask overhead per decode step.
const textSchema = JSON.stringify({ type: 'object', properties: { text: { type: 'string', maxLength: 2000 } }, required: ['text'] });
const modes: { name: string; grammar: boolean; maskWorker: boolean; variant?: CudaVariant }[] = [
  { name: 'unconstrained', grammar: false, maskWorker: false },
  { name: 'masks on the worker', grammar: true, maskWorker: true },
  { name: 'masks on the engine thread', grammar: true, maskWorker: false },
];
if (backendName === 'cuda') modes.push({ name: 'worker, launch after masks', grammar: true, maskWorker: true, variant: { SLUICE_CUDA_MASK_OVERLAP: '0' } });
if (sections.has('steps')) {
  console.log(`\nper decode step on ${backendName}, ${options.model} preset, ${steps} tokens per request (a string field of a JSON schema: the batch stays full)`);
  console.log('  mask work: computing the step\'s masks; waited: the backend waiting for them at sampling (mask work not hidden behind the step)');
  console.log('  running | mode                       | step (median) | mask work per step | waited per step | step - unconstrained | load average');
  for (const running of [1, 64]) {
    const model = loadModel({ modelPath: options.model });
    const prompt = model.tokenizer.encode('Answer in JSON:');
    let plain = NaN;
    for (const mode of modes) {
      const backend = new TimedBackend(await withVariant(mode.variant ?? {}, () => createBackend(backendName)), running);
      const engine = await LlmEngine.create(model, backend, {
        maxTotalTokens: running * (prompt.length + steps + 16),
        maxRunningRequests: running,
        disableRegexJumpForward: true,
        maskWorker: mode.maskWorker,
        logger: quiet,
      });
      const grammar: GrammarSpec | null = mode.grammar ? { type: 'json_schema', schema: textSchema, param: 'bench' } : null;
      // Warm: the grammar compiled and the sessions run once.
      for await (const _ of engine.generate({ promptTokenIds: prompt, params: { maxNewTokens: 2, ignoreEos: true, grammar } }));
      backend.decodeStepMs.length = 0;
      const before = { ...engine.constraints.stats };
      await Promise.all(
        Array.from({ length: running }, async (_, i) => {
          for await (const _ of engine.generate({ promptTokenIds: prompt, params: { maxNewTokens: steps, temperature: 1, topK: 40, seed: i, ignoreEos: true, grammar } }));
        }),
      );
      const stats = engine.constraints.stats;
      const maskSteps = Math.max(1, stats.steps - before.steps);
      const work = (stats.fillMs - before.fillMs) / maskSteps;
      const waited = (stats.exposedMs - before.exposedMs) / maskSteps;
      const step = median(backend.decodeStepMs);
      if (!mode.grammar) plain = step;
      await engine.close();
      const share = (x: number) => `(${((100 * x) / step).toFixed(1)} %)`;
      console.log(
        `  ${String(running).padStart(7)} | ${mode.name.padEnd(26)} | ${ms(step).padStart(10)} ms | ${mode.grammar ? `${ms(work)} ms ${share(work)}`.padStart(18) : '-'.padStart(18)} | ${mode.grammar ? `${ms(waited)} ms ${share(waited)}`.padStart(15) : '-'.padStart(15)} | ${mode.grammar ? `${ms(step - plain)} ms`.padStart(20) : '-'.padStart(20)} | ${load()}`,
      );
    }
  }
}

// 3. Jump-forward on the schema suite.
if (sections.has('jump-forward')) {
  const model = loadModel({ modelPath: 'tiny' });
  const prompt = model.tokenizer.encode('JSON:');
  console.log(`\njump-forward on the ${Object.keys(schemaSuite).length}-schema suite (${backendName}, tiny preset, greedy, one request at a time)`);
  const results: { output: number; forced: number; steps: number; ms: number }[] = [];
  for (const disable of [true, false]) {
    const counting = new TimedBackend(await createBackend(backendName), 1);
    const engine = await LlmEngine.create(model, counting, { maxTotalTokens: 16384, disableRegexJumpForward: disable, logger: quiet });
    let output = 0;
    const t = performance.now();
    for (const schema of Object.values(schemaSuite)) {
      const grammar: GrammarSpec = { type: 'json_schema', schema: JSON.stringify(schema), param: 'bench' };
      for await (const d of engine.generate({ promptTokenIds: prompt, params: { maxNewTokens: 200, temperature: 0, grammar } })) output += d.tokenIds.length;
    }
    results.push({ output, forced: engine.constraints.stats.forcedTokens, steps: counting.steps, ms: performance.now() - t });
    await engine.close();
  }
  const [off, on] = results as [(typeof results)[0], (typeof results)[0]];
  console.log(`  off: ${off.output} output tokens in ${off.steps} model steps, ${ms(off.ms)} ms (compiles included)`);
  console.log(`  on:  ${on.output} output tokens in ${on.steps} model steps, ${ms(on.ms)} ms; ${on.forced} tokens appended by jump-forward (${((100 * on.forced) / on.output).toFixed(1)} % of the output)`);
  console.log(`  model steps saved: ${off.steps - on.steps} of ${off.steps} (${((100 * (off.steps - on.steps)) / off.steps).toFixed(1)} %); load average ${load()}`);
}
