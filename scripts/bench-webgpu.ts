/**
 * The webgpu backend's speed on a preset with dummy weights: prefill tok/s (one prompt in one
 * step), decode tok/s (one token per step for `--batch` sequences), and where GPU time goes per
 * op (timestamp queries, when the adapter has them), with the adapter's description.
 *
 *   npm run bench:webgpu [-- --preset small] [-- --prompt 64] [-- --decode 16] [-- --batch 1]
 *                        [-- --temperature 0] [-- --top-p 1] [-- --json]
 *
 * Temperature 0 is greedy (one reduction over the vocabulary per sequence); above 0 the sample
 * op also runs the top-p and inverse-CDF searches.
 */
import { performance } from 'node:perf_hooks';
import type { ForwardBatch } from '../src/engine/backend.js';
import { createWebGpuBackend } from '../backends/webgpu/index.js';
import type { OpTiming } from '../backends/webgpu/profiler.js';
import { DummyWeights } from '../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../src/model/graph.js';
import { pagedBatch } from '../test/support/paged-batch.js';
import { presets } from '../src/model/presets.js';
import { scriptOptions } from './script-options.js';

const options = scriptOptions('bench:webgpu', {
  json: { type: 'boolean', default: false },
  preset: { type: 'string', default: 'small' },
  prompt: { type: 'string', default: '64' },
  decode: { type: 'string', default: '16' },
  batch: { type: 'string', default: '1' },
  temperature: { type: 'string', default: '0' },
  'top-p': { type: 'string', default: '1' },
});
const json = options.json;
const presetName = options.preset;
const promptTokens = Number(options.prompt);
const decodeSteps = Number(options.decode);
const batchSize = Number(options.batch);
const temperature = Number(options.temperature);
const topP = Number(options['top-p']);
const config = presets[presetName];
if (!(temperature >= 0) || !(topP > 0 && topP <= 1)) throw new Error('--temperature must be >= 0 and --top-p in (0, 1]');
if (!config) throw new Error(`unknown preset ${presetName} (${Object.keys(presets).join(', ')})`);
for (const [name, value] of [['prompt', promptTokens], ['decode', decodeSteps], ['batch', batchSize]] as const) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer, got ${value}`);
}

const pageSize = 16;
const pagesPerSeq = Math.ceil((promptTokens + decodeSteps + 2) / pageSize);
const loadStart = performance.now();
const backend = await createWebGpuBackend();
await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 0) });
await backend.allocateKvCache({ numPages: pagesPerSeq * batchSize, pageSize });
const loadSeconds = (performance.now() - loadStart) / 1000;

/** A step feeding `counts[i]` tokens to sequence seqs[i], which already holds `cached[i]` positions in its own pages. */
function step(seqs: number[], cached: number[], counts: number[]): ForwardBatch {
  const steps = seqs.map((s, i) => ({
    tokens: Array.from({ length: counts[i]! }, (_, j) => ((cached[i]! + j) * 7919 + s * 104729) % config!.vocabSize),
    cached: cached[i]!,
    pages: Array.from({ length: Math.ceil((cached[i]! + counts[i]!) / pageSize) }, (_, p) => s * pagesPerSeq + p),
  }));
  const numSeqs = seqs.length;
  return pagedBatch(steps, pageSize, {
    temperature: new Float32Array(numSeqs).fill(temperature),
    topP: new Float32Array(numSeqs).fill(topP),
    topK: new Int32Array(numSeqs),
    minP: new Float32Array(numSeqs),
    random: Float32Array.from({ length: numSeqs }, (_, i) => ((i + 1) * 0.618034) % 1),
    logprobs: new Int32Array(numSeqs).fill(-1),
    penalties: null,
  });
}

const prompt = (s: number) => step([s], [0], [promptTokens]);
const allSeqs = Array.from({ length: batchSize }, (_, s) => s);

// Warm-up compiles every pipeline (prefill and decode shapes) outside the timed runs.
const warmupTokens = Math.min(promptTokens, 16);
await backend.forward(step([0], [0], [warmupTokens]));
await backend.forward(step([0], [warmupTokens], [1]));

const prefillStart = performance.now();
for (const s of allSeqs) await backend.forward(prompt(s));
const prefillSeconds = (performance.now() - prefillStart) / 1000;

const cached = Array(batchSize).fill(promptTokens);
const decodeStart = performance.now();
for (let i = 0; i < decodeSteps; i++) {
  await backend.forward(step(allSeqs, cached, Array(batchSize).fill(1)));
  for (let s = 0; s < batchSize; s++) cached[s]++;
}
const decodeSeconds = (performance.now() - decodeStart) / 1000;

let decodeOps: OpTiming[] | null = null;
let prefillOps: OpTiming[] | null = null;
if (backend.setProfiling(true)) {
  await backend.forward(step(allSeqs, cached, Array(batchSize).fill(1)));
  decodeOps = backend.lastProfile();
  await backend.forward(prompt(0));
  prefillOps = backend.lastProfile();
}

const result = {
  adapter: backend.description,
  preset: presetName,
  date: new Date().toISOString(),
  loadSeconds: round(loadSeconds),
  promptTokens,
  batchSize,
  decodeSteps,
  temperature,
  topP,
  prefillTokensPerSecond: round((promptTokens * batchSize) / prefillSeconds),
  decodeTokensPerSecond: round((decodeSteps * batchSize) / decodeSeconds),
  decodeStepMs: round((decodeSeconds * 1000) / decodeSteps),
  opsDecodeStep: decodeOps && withShares(decodeOps),
  opsPrefillStep: prefillOps && withShares(prefillOps),
};
await backend.close();

if (json) {
  console.log(JSON.stringify(result));
} else {
  console.log(`adapter: ${result.adapter}`);
  const sampling = temperature > 0 ? `temperature ${temperature}, top-p ${topP}` : 'greedy';
  console.log(`preset ${presetName}, dummy weights, load ${result.loadSeconds} s, ${sampling}`);
  console.table([
    { phase: `prefill (${promptTokens}-token prompt${batchSize > 1 ? ` x ${batchSize}` : ''})`, 'tok/s': result.prefillTokensPerSecond },
    { phase: `decode (batch ${batchSize}, ${decodeSteps} steps, ${result.decodeStepMs} ms/step)`, 'tok/s': result.decodeTokensPerSecond },
  ]);
  if (!decodeOps) console.log('per-op breakdown: the adapter has no timestamp queries');
  for (const [name, ops] of [['decode step', result.opsDecodeStep], [`prefill step (${promptTokens} tokens)`, result.opsPrefillStep]] as const) {
    if (!ops) continue;
    console.log(`GPU time per op, one ${name}:`);
    console.table(ops.map((o) => ({ op: o.op, dispatches: o.dispatches, ms: o.ms, '%': o.share })));
  }
}

function withShares(ops: OpTiming[]) {
  const total = ops.reduce((sum, o) => sum + o.ms, 0);
  return ops
    .map((o) => ({ op: o.op, dispatches: o.dispatches, ms: round(o.ms), share: round((100 * o.ms) / total) }))
    .sort((a, b) => b.ms - a.ms);
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
