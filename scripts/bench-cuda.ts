/**
 * The CUDA benchmark of scripts/gpu-check.sh: Llama-3.1-8B shapes with dummy weights on one GPU.
 * Decode step time at batch 1, 8, 64 and 256 (ms, tok/s, percent of the weight-read floor),
 * prefill tok/s for 1024-token chunks, and an offline run of ShareGPT-shaped requests through the
 * engine. Prints one table.
 *
 *   npm run bench:cuda [-- --requests N] [--preset P] [--batches 1,8,64,256] [--page-size 16] [--backend cuda]
 */
import type { Backend, ForwardBatch } from '../src/engine/backend.js';
import { createBackend } from '../backends/index.js';
import { SeededRandom } from '../src/bench/seeded-random.js';
import { shareGptDropReason } from '../src/bench/sharegpt.js';
import { drawSynthLengths } from '../src/bench/synth-sharegpt.js';
import { loadModel } from '../src/model/load.js';
import { greedySampling, pagedBatch } from '../test/support/paged-batch.js';
import { expectedTensors } from '../src/model/weights.js';
import { scriptOptions } from './script-options.js';

const options = scriptOptions('bench:cuda', {
  preset: { type: 'string' },
  backend: { type: 'string' },
  batches: { type: 'string' },
  requests: { type: 'string' },
  'bandwidth-tbs': { type: 'string' },
  'page-size': { type: 'string' },
});
const args = new Map(Object.entries(options).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));
const preset = args.get('preset') ?? 'llama-3.1-8b';
/** Another backend only to try the script itself on a machine without a GPU (e.g. --backend ref --preset tiny). */
const backendName = (args.get('backend') ?? 'cuda') as 'cuda' | 'ref' | 'cpu';
const batchSizes = (args.get('batches') ?? '1,8,64,256').split(',').map(Number);
const numRequests = Number(args.get('requests') ?? 1000);
/** H200 HBM3e copy bandwidth measured on the check machine (environment-notes.md). */
const bandwidth = Number(args.get('bandwidth-tbs') ?? 4.3) * 1e12;
const decodeContext = 256;
const decodeSteps = 20;
/** KV page size of both parts: 16 keeps the per-step page tables small (the engine's default is 1, as SGLang's). */
const pageSize = Number(args.get('page-size') ?? 16);

const rows: string[][] = [];
const row = (...cells: (string | number)[]) => {
  rows.push(cells.map(String));
  console.error(`  ${cells.join(' | ')}`);
};

const model = loadModel({ modelPath: preset, loadFormat: 'dummy' });
const c = model.config;
const weightBytes = sumWeightBytes();
const floorMs = (weightBytes / bandwidth) * 1e3;

/** Every tensor of the checkpoint, as the floor counts it (16.06 GB for Llama-3.1-8B in bf16). */
function sumWeightBytes(): number {
  return expectedTensors(c).reduce((total, t) => total + t.shape.reduce((a, b) => a * b, 1) * 2, 0);
}

/** Page allocator over one backend's KV pool: each sequence gets its own run of pages. */
class Pages {
  private next = 0;
  constructor(readonly numPages: number) {}
  take(tokens: number): number[] {
    const n = Math.ceil(tokens / pageSize);
    if (this.next + n > this.numPages) throw new Error('benchmark ran out of KV pages');
    const pages = Array.from({ length: n }, (_, i) => this.next + i);
    this.next += n;
    return pages;
  }
}

interface Seq {
  pages: number[];
  len: number;
}

function batchOf(seqs: Seq[], newTokens: number[]): ForwardBatch {
  const steps = seqs.map((s, i) => ({
    tokens: Array.from({ length: newTokens[i]! }, (_, j) => ((s.len + j) * 7919 + i * 104729) % 128000),
    cached: s.len,
    pages: s.pages,
  }));
  return pagedBatch(steps, pageSize, greedySampling(seqs.length));
}

async function step(backend: Backend, seqs: Seq[], newTokens: number[]): Promise<number> {
  const batch = batchOf(seqs, newTokens);
  const t0 = performance.now();
  await backend.forward(batch);
  const ms = performance.now() - t0;
  seqs.forEach((s, i) => (s.len += newTokens[i]!));
  return ms;
}

async function kernelBench(): Promise<void> {
  const backend = await createBackend(backendName, { graphCapture: true });
  const t0 = performance.now();
  await backend.load({ config: c, graph: model.graph, weights: model.weights });
  console.error(`bench-cuda: ${backend.description}`);
  row('load (dummy weights on the device)', `${((performance.now() - t0) / 1000).toFixed(1)} s`, '', '');
  const perSeqTokens = decodeContext + 3 + decodeSteps + 8;
  const prefillSeqs = 6;
  const numPages = Math.ceil(perSeqTokens / pageSize) * batchSizes.reduce((a, b) => a + b, 0) + Math.ceil(1024 / pageSize) * prefillSeqs + 8;
  await backend.allocateKvCache({ numPages, pageSize });
  const pages = new Pages(numPages);

  for (const B of batchSizes) {
    const seqs: Seq[] = Array.from({ length: B }, () => ({ pages: pages.take(perSeqTokens), len: 0 }));
    for (let i = 0; i < B; i += 32) await step(backend, seqs.slice(i, i + 32), new Array(Math.min(32, B - i)).fill(decodeContext));
    for (let w = 0; w < 3; w++) await step(backend, seqs, new Array(B).fill(1)); // includes the graph capture
    const times: number[] = [];
    for (let s = 0; s < decodeSteps; s++) times.push(await step(backend, seqs, new Array(B).fill(1)));
    const ms = median(times);
    row(`decode batch ${B} (context ${decodeContext})`, `${ms.toFixed(2)} ms/step`, `${((B / ms) * 1000).toFixed(0)} tok/s`, `${((floorMs / ms) * 100).toFixed(0)}% of floor`);
  }
  const prefill: number[] = [];
  for (let i = 0; i < prefillSeqs; i++) {
    const seq: Seq = { pages: pages.take(1024), len: 0 };
    prefill.push(await step(backend, [seq], [1024]));
  }
  const ms = median(prefill.slice(1));
  row('prefill 1024-token chunk', `${ms.toFixed(1)} ms`, `${((1024 / ms) * 1000).toFixed(0)} tok/s`, '');
  await backend.close();
}

async function offlineBench(): Promise<void> {
  const { LlmEngine } = await import('../src/engine/engine.js');
  const backend = await createBackend(backendName, { graphCapture: true });
  const engine = await LlmEngine.create(model, backend, { pageSize });
  const random = new SeededRandom(1);
  const requests: { prompt: number[]; outputLen: number }[] = [];
  while (requests.length < numRequests) {
    const { promptLen, outputLen } = drawSynthLengths(random);
    if (shareGptDropReason(promptLen, outputLen)) continue;
    const prompt = Array.from({ length: promptLen }, (_, i) => (i === 0 ? 128000 : random.integer(0, 127999)));
    requests.push({ prompt, outputLen });
  }
  const t0 = performance.now();
  let outputTokens = 0;
  let inputTokens = 0;
  await Promise.all(
    requests.map(async (r) => {
      inputTokens += r.prompt.length;
      const stream = engine.generate({ promptTokenIds: r.prompt, params: { maxNewTokens: r.outputLen, temperature: 0, ignoreEos: true } });
      for await (const delta of stream) outputTokens += delta.tokenIds.length;
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  row(`offline ${numRequests} ShareGPT-shaped requests (page size ${pageSize})`, `${seconds.toFixed(1)} s`, `${(outputTokens / seconds).toFixed(0)} output tok/s`, `${((inputTokens + outputTokens) / seconds).toFixed(0)} total tok/s`);
  await engine.close();
  await backend.close();
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

console.error(`bench-cuda: ${preset}, ${(weightBytes / 1e9).toFixed(2)} GB of weights read per step, floor ${floorMs.toFixed(2)} ms at ${(bandwidth / 1e12).toFixed(1)} TB/s`);
for (const [name, fn] of [['kernels', kernelBench], ['offline', offlineBench]] as const) {
  try {
    await fn();
  } catch (e) {
    row(`${name} benchmark failed`, (e as Error).message.split('\n')[0]!, '', '');
    process.exitCode = 1;
  }
}
const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => (r[i] ?? '').length), 4));
const line = (cells: string[]) => `| ${cells.map((x, i) => x.padEnd(widths[i]!)).join(' | ')} |`;
console.log(`\n${preset} with dummy weights on ${new Date().toISOString().slice(0, 10)}; floor = ${(weightBytes / 1e9).toFixed(2)} GB / ${(bandwidth / 1e12).toFixed(1)} TB/s = ${floorMs.toFixed(2)} ms/step`);
console.log(line(['what', 'time', 'rate', 'note']));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of rows) console.log(line(r));
