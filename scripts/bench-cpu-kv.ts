/**
 * `npm run bench:cpu-kv`: single-stream decode on the CPU backend at long contexts, with the f32
 * KV cache (`--kv-cache-dtype auto`) and the 8-bit and 4-bit ones, side by side in one process. Every dtype's
 * backend is loaded once; then for each context length the same decode step (one token at
 * position = context, attending over `context` cached slots) is timed on each backend in turn,
 * alternating over rounds, with the load average printed. The cache's contents do not change a
 * step's cost, so the context is set up by the batch's page table rather than by a prefill.
 *
 * Options: --model NAME (preset, default llama-3.2-1b), --layers N (fewer decoder layers: a
 * quicker load, same attention per layer), --weight-format q8|q4|f32 (q8), --kv auto,q8_0,q4_0,fp8_e4m3
 * (comma-separated), --context 1024,4096,16384, --steps N per round (8), --rounds N (3),
 * --threads N (2), --json.
 */
import { loadavg } from 'node:os';
import { create as createCpuBackend } from '../backends/cpu/index.js';
import type { WeightFormat } from '../backends/cpu/linear-weights.js';
import { kvCacheDtypes, type Backend, type ForwardBatch, type KvCacheDtype } from '../src/engine/backend.js';
import { kvBytesPerToken } from '../src/engine/kv-capacity.js';
import { kvCacheFormat } from '../backends/cpu/kv-store.js';
import { kvBytesPerValue } from '../backends/cpu/segment-graph.js';
import { buildLlamaGraph } from '../src/model/graph.js';
import { DummyWeights } from '../src/model/dummy-weights.js';
import { presets } from '../src/model/presets.js';
import { scriptOptions } from './script-options.js';

const args = scriptOptions('bench:cpu-kv', {
  model: { type: 'string', default: 'llama-3.2-1b' },
  layers: { type: 'string' },
  'weight-format': { type: 'string', default: 'q8' },
  kv: { type: 'string', default: 'auto,q8_0,q4_0,fp8_e4m3' },
  context: { type: 'string', default: '1024,4096,16384' },
  steps: { type: 'string', default: '8' },
  rounds: { type: 'string', default: '3' },
  threads: { type: 'string', default: '2' },
  json: { type: 'boolean', default: false },
});

const preset = presets[args.model!];
if (!preset) throw new Error(`--model must be a preset (${Object.keys(presets).join(', ')}), got ${args.model}`);
const config = { ...preset, numLayers: args.layers ? Number(args.layers) : preset.numLayers };
const dtypes = args.kv!.split(',') as KvCacheDtype[];
for (const d of dtypes) if (!(kvCacheDtypes as readonly string[]).includes(d)) throw new Error(`--kv: ${d} is not one of ${kvCacheDtypes.join(', ')}`);
const contexts = args.context!.split(',').map(Number);
const steps = Number(args.steps);
const rounds = Number(args.rounds);

/** One decode token at position `context`, over `context` earlier slots (page size 1). */
function decodeBatch(context: number): ForwardBatch {
  return {
    tokenIds: Int32Array.of(1000),
    positions: Int32Array.of(context),
    queryStart: Int32Array.of(0, 1),
    kvLens: Int32Array.of(context + 1),
    pageTable: Int32Array.from({ length: context + 1 }, (_, i) => i),
    pageTableStart: Int32Array.of(0, context + 1),
    slotMapping: Int32Array.of(context),
    sampling: { temperature: Float32Array.of(0), topP: Float32Array.of(1), topK: Int32Array.of(0), minP: Float32Array.of(0), random: Float32Array.of(0), logprobs: Int32Array.of(-1), penalties: null },
  };
}

const log = (line: string) => process.stderr.write(`[bench:cpu-kv] ${line}\n`);
const load = () => loadavg().map((x) => x.toFixed(1)).join(' ');

async function main(): Promise<void> {
  const maxContext = Math.max(...contexts);
  const backends: { dtype: KvCacheDtype; backend: Backend }[] = [];
  for (const dtype of dtypes) {
    const started = performance.now();
    const backend = await createCpuBackend({ threads: Number(args.threads), cpuWeights: args['weight-format'] as WeightFormat, kvCacheDtype: dtype });
    await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 0) });
    await backend.allocateKvCache({ numPages: maxContext + 1, pageSize: 1 });
    log(`${dtype}: ${backend.description}; loaded in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    backends.push({ dtype, backend });
  }
  const rows: { context: number; dtype: KvCacheDtype; msPerStep: number; tokPerS: number; kvMiB: number; load: string }[] = [];
  for (const context of contexts) {
    const batch = decodeBatch(context);
    const times = new Map<KvCacheDtype, number[]>();
    for (const { backend } of backends) await backend.forward(batch); // warm-up at this shape
    for (let r = 0; r < rounds; r++) {
      for (const { dtype, backend } of backends) {
        const t = performance.now();
        for (let s = 0; s < steps; s++) await backend.forward(batch);
        (times.get(dtype) ?? times.set(dtype, []).get(dtype)!).push((performance.now() - t) / steps);
      }
    }
    for (const { dtype } of backends) {
      const ms = times.get(dtype)!.sort((a, b) => a - b)[Math.floor(rounds / 2)]!;
      const bytesPerValue = kvBytesPerValue(kvCacheFormat(dtype), config.headDim);
      const kvMiB = (kvBytesPerToken(config, bytesPerValue) * context) / 2 ** 20;
      rows.push({ context, dtype, msPerStep: ms, tokPerS: 1000 / ms, kvMiB, load: load() });
      log(`context ${context}, ${dtype}: ${ms.toFixed(1)} ms/step (${(1000 / ms).toFixed(2)} tok/s), KV ${kvMiB.toFixed(0)} MiB (load ${load()})`);
    }
  }
  for (const { backend } of backends) await backend.close();
  if (args.json) process.stdout.write(`${JSON.stringify({ model: args.model, layers: config.numLayers, weightFormat: args['weight-format'], rows })}\n`);
}

await main();
