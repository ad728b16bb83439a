import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import type { Backend, ForwardBatch, SamplingBatch, StepOutput } from '../../backends/backend.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { createWebGpuBackend, type GpuContextOptions, type WebGpuBackend, type WebGpuTuning } from '../../backends/webgpu/index.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { SingleSequence } from '../../src/model/single-sequence.js';
import { openGpuForTests } from './webgpu-harness.js';

const probe = await openGpuForTests();
probe?.destroy();

/** A variant with odd shapes: 5 heads over 1 KV head, head dim 6, an untied lm-head, linear rope scaling. */
const oddConfig: LlamaConfig = {
  ...presets.tiny!,
  vocabSize: 301,
  hiddenSize: 30,
  intermediateSize: 70,
  numLayers: 3,
  numHeads: 5,
  numKvHeads: 1,
  headDim: 6,
  tieWordEmbeddings: false,
  ropeScaling: { type: 'linear', factor: 2 },
  ropeTheta: 10000,
};

type Tuning = WebGpuTuning & GpuContextOptions;
const open: Backend[] = [];

/** f16 dummy weights: the values the GPU stores in f16 are exactly the reference's. */
async function loaded(backend: Backend, config: LlamaConfig, kv: { numPages: number; pageSize: number }): Promise<Backend> {
  open.push(backend);
  await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 5, 'f16') });
  await backend.allocateKvCache(kv);
  return backend;
}

const webgpu = (config: LlamaConfig, kv: { numPages: number; pageSize: number }, tuning: Tuning = {}) =>
  createWebGpuBackend(tuning).then((b) => loaded(b, config, kv));
const ref = (config: LlamaConfig, kv: { numPages: number; pageSize: number }) => loaded(new RefBackend(), config, kv);

function greedySampling(numSeqs: number, logprobs: number): SamplingBatch {
  return {
    temperature: new Float32Array(numSeqs),
    topP: new Float32Array(numSeqs).fill(1),
    topK: new Int32Array(numSeqs),
    minP: new Float32Array(numSeqs),
    random: new Float32Array(numSeqs),
    logprobs: new Int32Array(numSeqs).fill(logprobs),
    penalties: null,
  };
}

/**
 * Continuous batching in miniature: each step feeds some pending tokens of some sequences
 * (prefill chunks and decode tokens side by side) through a paged cache whose pages are handed
 * out in a scrambled order.
 */
class Schedule {
  private readonly tokens: number[][];
  private readonly fed: number[];
  private readonly pages: number[][];
  private readonly free: number[];

  constructor(
    prompts: number[][],
    private readonly pageSize: number,
    numPages: number,
  ) {
    this.tokens = prompts.map((p) => [...p]);
    this.fed = prompts.map(() => 0);
    this.pages = prompts.map(() => []);
    this.free = Array.from({ length: numPages }, (_, i) => (i * 11) % numPages);
  }

  /** counts[s]: how many pending tokens of sequence s this step feeds (0: not scheduled). */
  next(counts: number[], logprobs: number): { batch: ForwardBatch; seqs: number[] } {
    const seqs = counts.flatMap((n, s) => (n > 0 && this.fed[s]! < this.tokens[s]!.length ? [s] : []));
    const b = { tokenIds: [] as number[], positions: [] as number[], queryStart: [0], kvLens: [] as number[], pageTable: [] as number[], pageTableStart: [0], slotMapping: [] as number[] };
    for (const s of seqs) {
      const kvLen = Math.min(this.fed[s]! + counts[s]!, this.tokens[s]!.length);
      while (this.pages[s]!.length * this.pageSize < kvLen) this.pages[s]!.push(this.free.shift()!);
      for (let p = this.fed[s]!; p < kvLen; p++) {
        b.tokenIds.push(this.tokens[s]![p]!);
        b.positions.push(p);
        b.slotMapping.push(this.pages[s]![Math.floor(p / this.pageSize)]! * this.pageSize + (p % this.pageSize));
      }
      b.queryStart.push(b.tokenIds.length);
      b.kvLens.push(kvLen);
      b.pageTable.push(...this.pages[s]!);
      b.pageTableStart.push(b.pageTable.length);
      this.fed[s] = kvLen;
    }
    const batch: ForwardBatch = {
      tokenIds: Int32Array.from(b.tokenIds),
      positions: Int32Array.from(b.positions),
      queryStart: Int32Array.from(b.queryStart),
      kvLens: Int32Array.from(b.kvLens),
      pageTable: Int32Array.from(b.pageTable),
      pageTableStart: Int32Array.from(b.pageTableStart),
      slotMapping: Int32Array.from(b.slotMapping),
      sampling: greedySampling(seqs.length, logprobs),
    };
    return { batch, seqs };
  }

  /** Appends the sampled token of each sequence whose known tokens have all been fed. */
  advance(seqs: number[], out: StepOutput): void {
    seqs.forEach((s, i) => {
      if (this.fed[s] === this.tokens[s]!.length) this.tokens[s]!.push(out.tokens[i]!);
    });
  }
}

const promptOf = (length: number, seed: number, vocab: number) =>
  Array.from({ length }, (_, i) => (Math.imul(i + 3, 2654435761) ^ seed) >>> 0).map((x) => x % vocab);

const mixedSteps = [
  [5, 3, 0, 0],
  [4, 3, 9, 0],
  [1, 3, 2, 1],
  [1, 1, 9, 6],
  [1, 1, 1, 6],
  [1, 1, 1, 1],
  [1, 0, 1, 1],
  [1, 1, 1, 1],
];

/** Runs one schedule on both backends (the reference's tokens fed back), comparing every step. */
async function compareMixed(gpu: Backend, cpuRef: Backend, prompts: number[][], pageSize: number, numPages: number) {
  const schedule = new Schedule(prompts, pageSize, numPages);
  let worst = 0;
  let compared = 0;
  for (const counts of mixedSteps) {
    const { batch, seqs } = schedule.next(counts, 2);
    const want = await cpuRef.forward(batch);
    const got = await gpu.forward(batch);
    expect(Array.from(got.tokens)).toEqual(Array.from(want.tokens));
    expect(Array.from(got.topLogprobs!.ids)).toEqual(Array.from(want.topLogprobs!.ids));
    for (let i = 0; i < seqs.length; i++) worst = Math.max(worst, Math.abs(got.logprobs![i]! - want.logprobs![i]!));
    compared += seqs.length;
    schedule.advance(seqs, want);
  }
  return { worst, compared };
}

afterAll(async () => {
  for (const b of open) await b.close();
});

describe.skipIf(probe === null)('webgpu backend against the reference backend', () => {
  const tiny = presets.tiny!;

  it('describes the adapter and sizes its KV pool within one binding per layer', async () => {
    const gpu = await webgpu(tiny, { numPages: 16, pageSize: 4 });
    expect(gpu.name).toBe('webgpu');
    expect(gpu.description).toMatch(/^webgpu: .+ \(Dawn/);
    expect(gpu.kvBytesPerToken()).toBe(2 * tiny.numLayers * tiny.numKvHeads * tiny.headDim * 4);
    const memory = gpu.memory()!;
    expect(memory.freeBytes).toBeGreaterThan(0);
    expect(memory.freeBytes).toBeLessThan(memory.totalBytes);
  });

  it('tiny preset: greedy tokens and log-probs of one sequence match', async () => {
    const prompt = [128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13];
    const a = await new SingleSequence(await webgpu(tiny, { numPages: 64, pageSize: 1 }), 0).greedy(prompt, 12);
    const b = await new SingleSequence(await ref(tiny, { numPages: 64, pageSize: 1 }), 0).greedy(prompt, 12);
    expect(a.tokens).toEqual(b.tokens);
    for (let i = 0; i < a.logprobs.length; i++) expect(a.logprobs[i]).toBeCloseTo(b.logprobs[i]!, 3);
  });

  it('tiny preset: mixed prefill and decode batches over a paged cache (page size 4), decode attention split', async () => {
    const prompts = [9, 6, 20, 12].map((n, s) => promptOf(n, s + 1, 128000));
    const gpu = await webgpu(tiny, { numPages: 64, pageSize: 4 }, { attentionSplitSize: 8 });
    const { worst, compared } = await compareMixed(gpu, await ref(tiny, { numPages: 64, pageSize: 4 }), prompts, 4, 64);
    expect(compared).toBeGreaterThan(20);
    expect(worst).toBeLessThan(2e-3);
  });

  it('odd shapes with f32 weights split across many bindings (page size 3)', async () => {
    const gpu = await webgpu(oddConfig, { numPages: 40, pageSize: 3 }, { forceF32Weights: true, maxBindingBytes: 8192 });
    expect(gpu.description).toMatch(/f32 weights/);
    expect((gpu as WebGpuBackend).weightBindings('lm_head.weight')).toBe(Math.ceil(301 / Math.floor(8192 / (30 * 4))));
    const prompts = [7, 2, 11, 5].map((n, s) => promptOf(n, s + 11, oddConfig.vocabSize));
    const { worst, compared } = await compareMixed(gpu, await ref(oddConfig, { numPages: 40, pageSize: 3 }), prompts, 3, 40);
    expect(compared).toBeGreaterThan(20);
    expect(worst).toBeLessThan(2e-3);
  });

  it('grows its buffers for a step larger than any before (100+ tokens, 12 sequences, top-6 log-probs)', async () => {
    const kv = { numPages: 120, pageSize: 2 };
    const gpu = await webgpu(oddConfig, kv);
    const cpuRef = await ref(oddConfig, kv);
    const prompts = Array.from({ length: 12 }, (_, s) => promptOf(5 + s, s + 40, oddConfig.vocabSize));
    const schedule = new Schedule(prompts, kv.pageSize, kv.numPages);
    for (const counts of [prompts.map(() => 1), prompts.map(() => 20), prompts.map(() => 1)]) {
      const { batch, seqs } = schedule.next(counts, 6);
      const want = await cpuRef.forward(batch);
      const got = await gpu.forward(batch);
      expect(Array.from(got.tokens)).toEqual(Array.from(want.tokens));
      expect(got.topLogprobs!.k).toBe(6);
      expect(Array.from(got.topLogprobs!.ids)).toEqual(Array.from(want.topLogprobs!.ids));
      got.logprobs!.forEach((x, i) => expect(Math.abs(x - want.logprobs![i]!)).toBeLessThan(2e-3));
      schedule.advance(seqs, want);
    }
  });

  it('rejects a batch whose token ids or slots fall outside the model or cache, and keeps working', async () => {
    const gpu = await webgpu(oddConfig, { numPages: 8, pageSize: 2 });
    const step = (tokenId: number, slot: number): ForwardBatch => ({
      tokenIds: Int32Array.of(tokenId),
      positions: Int32Array.of(0),
      queryStart: Int32Array.of(0, 1),
      kvLens: Int32Array.of(1),
      pageTable: Int32Array.of(Math.floor(slot / 2)),
      pageTableStart: Int32Array.of(0, 1),
      slotMapping: Int32Array.of(slot),
      sampling: greedySampling(1, -1),
    });
    await expect(gpu.forward(step(oddConfig.vocabSize, 0))).rejects.toThrow(/token id 301 is outside the vocabulary/);
    await expect(gpu.forward(step(1, 99))).rejects.toThrow(/KV slot 99 is outside the cache/);
    const ok = await gpu.forward(step(1, 0));
    expect(ok.tokens[0]).toBeGreaterThanOrEqual(0);
    expect(ok.logprobs).toBeNull();
  });
});

describe('webgpu backend without an adapter', () => {
  it.runIf(process.platform === 'linux')('says so in one line (BackendUnavailableError) when Vulkan finds no driver', () => {
    const script = "import('./backends/index.ts').then(m => m.createBackend('webgpu')).then(() => console.log('adapter found'), e => console.log(e.name + ': ' + e.message))";
    const run = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
      env: { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^BackendUnavailableError: webgpu backend: no WebGPU adapter \(.*install-vulkan\.sh/);
  });
});
