/**
 * The CUDA benchmark of scripts/gpu-check.sh: Llama-3.1-8B shapes with dummy weights on one GPU.
 * Every row is printed (stderr) as soon as it is measured, so a timeout still leaves the rows;
 * the whole table follows on stdout at the end.
 *
 *   --stage smoke   the GEMM path, one batch-1 decode step time per path variant (stage 1)
 *   --stage table   decode step time at batch 1, 8, 64, 256 (ms, tok/s, % of the weight-read
 *                   floor), prefill tok/s of 1024-token chunks, each variant side by side at
 *                   batch 1 and 64 with its parity against the default path, and an offline run
 *                   of synthetic ShareGPT-shaped requests for what is left of --budget-seconds
 *
 *   npm run bench:cuda -- [--stage table] [--preset P] [--batches 1,8,64,256] [--page-size 16]
 *                         [--budget-seconds 280] [--variants default,unfused,no-gemv,previous]
 *                         [--backend cuda] [--requests N]
 */
import type { Backend, ForwardBatch, StepOutput } from '../src/engine/backend.js';
import { createBackend } from '../backends/index.js';
import { cudaVariants, withVariant, type CudaVariant } from '../backends/cuda/variants.js';
import { SeededRandom } from '../src/bench/seeded-random.js';
import { shareGptDropReason } from '../src/bench/sharegpt.js';
import { drawSynthLengths } from '../src/bench/synth-sharegpt.js';
import { loadModel } from '../src/model/load.js';
import { greedySampling, pagedBatch } from '../test/support/paged-batch.js';
import { expectedTensors } from '../src/model/weights.js';
import type { LlamaConfig } from '../src/model/config.js';
import { scriptOptions } from './script-options.js';
import { loadavg } from 'node:os';

const options = scriptOptions('bench:cuda', {
  stage: { type: 'string' },
  preset: { type: 'string' },
  backend: { type: 'string' },
  batches: { type: 'string' },
  requests: { type: 'string' },
  variants: { type: 'string' },
  'budget-seconds': { type: 'string' },
  'bandwidth-tbs': { type: 'string' },
  'page-size': { type: 'string' },
});
const started = performance.now();
const stage = options.stage ?? 'table';
if (stage !== 'smoke' && stage !== 'table') {
  process.stderr.write(`bench:cuda: --stage must be smoke or table, not ${stage}\n`);
  process.exit(2);
}
const preset = options.preset ?? 'llama-3.1-8b';
/** Another backend only to try the script itself on a machine without a GPU (e.g. --backend ref --preset tiny). */
const backendName = (options.backend ?? 'cuda') as 'cuda' | 'ref' | 'cpu';
const batchSizes = (options.batches ?? '1,8,64,256').split(',').map(Number);
const budgetMs = Number(options['budget-seconds'] ?? (stage === 'smoke' ? 60 : 280)) * 1000;
const maxRequests = Number(options.requests ?? 5000);
const variantNames = (options.variants ?? Object.keys(cudaVariants).join(',')).split(',');
for (const v of variantNames) {
  if (!cudaVariants[v]) {
    process.stderr.write(`bench:cuda: unknown variant ${v} (known: ${Object.keys(cudaVariants).join(', ')})\n`);
    process.exit(2);
  }
}
/** H200 HBM3e copy bandwidth measured on the check machine (environment-notes.md). */
const bandwidth = Number(options['bandwidth-tbs'] ?? 4.3) * 1e12;
const decodeContext = 256;
const decodeSteps = 20;
/** KV page size of both parts: 16 keeps the per-step page tables small (the engine's default is 1, as SGLang's). */
const pageSize = Number(options['page-size'] ?? 16);

const rows: string[][] = [];
const row = (...cells: (string | number)[]) => {
  rows.push(cells.map(String));
  console.error(`  ${cells.join(' | ')}`);
};
const elapsedMs = () => performance.now() - started;

const model = loadModel({ modelPath: preset, loadFormat: 'dummy' });
const c = model.config;
/** What one decode step reads: every weight but the embedding table (a few rows), unless it is also the lm head. */
const weightBytes = decodeReadBytes(c, 2);
const floorMs = (weightBytes / bandwidth) * 1e3;

/** Bytes of weights a decode step reads: all but the embedding table, which it reads a few rows of (unless tied to the lm head). */
function decodeReadBytes(config: LlamaConfig, bytesPerElement: number): number {
  return expectedTensors(config)
    .filter((t) => config.tieWordEmbeddings || t.name !== 'model.embed_tokens.weight')
    .reduce((total, t) => total + t.shape.reduce((a, b) => a * b, 1) * bytesPerElement, 0);
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

function batchOf(seqs: Seq[], newTokens: number[], logprobs = -1): ForwardBatch {
  const steps = seqs.map((s, i) => ({
    tokens: Array.from({ length: newTokens[i]! }, (_, j) => ((s.len + j) * 7919 + i * 104729) % c.vocabSize),
    cached: s.len,
    pages: s.pages,
  }));
  return pagedBatch(steps, pageSize, greedySampling(seqs.length, logprobs));
}

async function step(backend: Backend, seqs: Seq[], newTokens: number[], outputs?: StepOutput[]): Promise<number> {
  const batch = batchOf(seqs, newTokens, outputs ? 0 : -1);
  const t0 = performance.now();
  const out = await backend.forward(batch);
  const ms = performance.now() - t0;
  outputs?.push(out);
  seqs.forEach((s, i) => (s.len += newTokens[i]!));
  return ms;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const load = () => loadavg()[0]!.toFixed(2);

async function openBackend(variant: CudaVariant): Promise<Backend> {
  return withVariant(variant, async () => {
    const backend = await createBackend(backendName, { graphCapture: true });
    await backend.load({ config: c, graph: model.graph, weights: model.weights });
    return backend;
  });
}

/** Decode at batch B after a `decodeContext`-token prefill per sequence; the median step time. */
async function decodeRow(backend: Backend, pages: Pages, B: number, steps: number, label: string, outputs?: StepOutput[]): Promise<number> {
  const seqs: Seq[] = Array.from({ length: B }, () => ({ pages: pages.take(decodeContext + steps + 8), len: 0 }));
  for (let i = 0; i < B; i += 32) await step(backend, seqs.slice(i, i + 32), new Array(Math.min(32, B - i)).fill(decodeContext));
  for (let w = 0; w < 3; w++) await step(backend, seqs, new Array(B).fill(1)); // includes the graph capture
  const times: number[] = [];
  for (let s = 0; s < steps; s++) times.push(await step(backend, seqs, new Array(B).fill(1), outputs));
  const ms = median(times);
  row(`${label}decode batch ${B} (context ${decodeContext})`, `${ms.toFixed(2)} ms/step`, `${((B / ms) * 1000).toFixed(0)} tok/s`, `${((floorMs / ms) * 100).toFixed(0)}% of floor; load ${load()}`);
  return ms;
}

async function prefillRow(backend: Backend, pages: Pages, chunks: number, label: string): Promise<void> {
  const times: number[] = [];
  for (let i = 0; i < chunks; i++) times.push(await step(backend, [{ pages: pages.take(1024), len: 0 }], [1024]));
  const ms = median(times.slice(1));
  row(`${label}prefill 1024-token chunk`, `${ms.toFixed(1)} ms`, `${((1024 / ms) * 1000).toFixed(0)} tok/s`, `load ${load()}`);
}

/** Tokens and log-probs of the same greedy steps under another path, against the default's. */
function parityNote(want: StepOutput[], got: StepOutput[]): string {
  let same = 0;
  let total = 0;
  let maxDiff = 0;
  want.forEach((w, i) => {
    const g = got[i]!;
    for (let s = 0; s < w.tokens.length; s++) {
      total++;
      if (g.tokens[s] === w.tokens[s]) {
        same++;
        maxDiff = Math.max(maxDiff, Math.abs(g.logprobs![s]! - w.logprobs![s]!));
      }
    }
  });
  return `${same}/${total} tokens as default, max logprob difference ${maxDiff.toFixed(3)}`;
}

/** Stage 1: the path in use and one batch-1 decode step per variant. */
async function smoke(): Promise<void> {
  let reference: StepOutput[] | null = null;
  for (const name of variantNames) {
    if (elapsedMs() > budgetMs) {
      row(`${name}: skipped`, 'stage budget spent', '', '');
      continue;
    }
    const t0 = performance.now();
    const backend = await openBackend(cudaVariants[name]!);
    console.error(`bench-cuda: [${name}] ${backend.description} (loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    const pages = new Pages(64);
    await backend.allocateKvCache({ numPages: 64, pageSize });
    const outputs: StepOutput[] = [];
    await decodeRow(backend, pages, 1, 5, `[${name}] `, outputs);
    if (reference) row(`[${name}] parity`, parityNote(reference, outputs), '', '');
    else reference = outputs;
    await backend.close();
  }
}

/** Stage 2: the table with the default path, the variants side by side, then the offline run. */
async function table(): Promise<void> {
  const backend = await openBackend(cudaVariants[variantNames[0]!]!);
  console.error(`bench-cuda: ${backend.description}`);
  const prefillSeqs = 6;
  const numPages = Math.ceil((decodeContext + decodeSteps + 16) / pageSize) * (batchSizes.reduce((a, b) => a + b, 0) + 4) + Math.ceil(1024 / pageSize) * prefillSeqs + 8;
  await backend.allocateKvCache({ numPages, pageSize });
  const pages = new Pages(numPages);
  const reference: StepOutput[] = [];
  for (const B of batchSizes) await decodeRow(backend, pages, B, decodeSteps, '', B === 1 ? reference : undefined);
  await prefillRow(backend, pages, prefillSeqs, '');
  await backend.close();

  for (const name of variantNames.slice(1)) {
    if (elapsedMs() > budgetMs * 0.55) {
      row(`[${name}]: skipped`, 'left for the offline run', '', '');
      continue;
    }
    try {
      const b = await openBackend(cudaVariants[name]!);
      const vPages = new Pages(256);
      await b.allocateKvCache({ numPages: 256, pageSize });
      const outputs: StepOutput[] = [];
      await decodeRow(b, vPages, 1, decodeSteps, `[${name}] `, outputs);
      row(`[${name}] parity at batch 1`, parityNote(reference, outputs), '', '');
      await decodeRow(b, vPages, 8, 5, `[${name}] `);
      await prefillRow(b, new Pages(Math.ceil(1024 / pageSize) * 3), 3, `[${name}] `);
      await b.close();
    } catch (e) {
      row(`[${name}] failed`, (e as Error).message.split('\n')[0]!, '', '');
      process.exitCode = 1;
    }
  }
  await offline();
}

/** Offline: ShareGPT-shaped requests all at once, stopped at the stage's budget; output tok/s over the window. */
async function offline(): Promise<void> {
  const { LlmEngine } = await import('../src/engine/engine.js');
  const seconds = Math.max(20_000, budgetMs - elapsedMs() - 15_000) / 1000;
  const backend = await withVariant(cudaVariants[variantNames[0]!]!, () => createBackend(backendName, { graphCapture: true }));
  const engine = await LlmEngine.create(model, backend, { pageSize });
  const random = new SeededRandom(1);
  const requests: { prompt: number[]; outputLen: number }[] = [];
  while (requests.length < maxRequests) {
    const { promptLen, outputLen } = drawSynthLengths(random);
    if (shareGptDropReason(promptLen, outputLen)) continue;
    const prompt = Array.from({ length: promptLen }, (_, i) => (i === 0 ? 128000 : random.integer(0, 127999)));
    requests.push({ prompt, outputLen });
  }
  const t0 = performance.now();
  let outputTokens = 0;
  let finished = 0;
  let open = true;
  // At the deadline every unfinished request is aborted: its stream ends with an abort delta.
  const timer = setTimeout(() => {
    open = false;
    requests.forEach((_, i) => engine.abort(`offline-${i}`));
  }, seconds * 1000);
  await Promise.all(
    requests.map(async (r, i) => {
      const stream = engine.generate({ id: `offline-${i}`, promptTokenIds: r.prompt, params: { maxNewTokens: r.outputLen, temperature: 0, ignoreEos: true } });
      for await (const delta of stream) {
        if (open) outputTokens += delta.tokenIds.length;
        if (delta.finishReason && delta.finishReason !== 'abort' && open) finished++;
      }
    }),
  );
  clearTimeout(timer);
  const took = (performance.now() - t0) / 1000;
  row(`offline ShareGPT-shaped, ${requests.length} submitted at once (page size ${pageSize})`, `${took.toFixed(1)} s, ${finished} finished`, `${(outputTokens / took).toFixed(0)} output tok/s`, `load ${load()}`);
  await engine.close();
  await backend.close();
}

console.error(`bench-cuda: ${preset}, ${(weightBytes / 1e9).toFixed(2)} GB of weights read per decode step, floor ${floorMs.toFixed(2)} ms at ${(bandwidth / 1e12).toFixed(1)} TB/s; stage ${stage}, budget ${budgetMs / 1000} s`);
try {
  await (stage === 'smoke' ? smoke() : table());
} catch (e) {
  row(`${stage} failed`, (e as Error).message.split('\n')[0]!, '', '');
  process.exitCode = 1;
}
const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => (r[i] ?? '').length), 4));
const line = (cells: string[]) => `| ${cells.map((x, i) => x.padEnd(widths[i]!)).join(' | ')} |`;
console.log(`\n${preset} with dummy weights on ${new Date().toISOString().slice(0, 10)}; floor = ${(weightBytes / 1e9).toFixed(2)} GB / ${(bandwidth / 1e12).toFixed(1)} TB/s = ${floorMs.toFixed(2)} ms/step`);
console.log(line(['what', 'time', 'rate', 'note']));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of rows) console.log(line(r));
