import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import type { Backend, ForwardBatch } from '../../src/engine/backend.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { createWebGpuBackend, type GpuContextOptions, type WebGpuBackend, type WebGpuTuning } from '../../backends/webgpu/index.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { greedySampling } from '../support/paged-batch.js';
import { presets } from '../../src/model/presets.js';
import { SingleSequence } from '../support/single-sequence.js';
import { MixedSchedule, mixedPrefillDecodeSteps, oddShapesConfig } from '../support/parity.js';
import { promptOf } from '../support/random-data.js';
import { openGpuForTests } from '../support/webgpu-harness.js';

const probe = await openGpuForTests();
probe?.destroy();

/** The shared odd shapes (5 heads over 1 KV head, head dim 6, an untied lm-head) with linear rope scaling. */
const oddConfig: LlamaConfig = { ...oddShapesConfig, ropeScaling: { type: 'linear', factor: 2 } };

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

/** Runs one schedule on both backends (the reference's tokens fed back), comparing every step. */
async function compareMixed(gpu: Backend, cpuRef: Backend, prompts: number[][], pageSize: number, numPages: number) {
  const schedule = new MixedSchedule(prompts, pageSize, numPages);
  let worst = 0;
  let compared = 0;
  for (const counts of mixedPrefillDecodeSteps) {
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
    const budget = { memFractionStatic: 0.88, maxTotalTokens: null, minTokens: 4 };
    const tokens = gpu.kvCapacity(budget);
    const f32Bytes = 2 * tiny.numLayers * tiny.numKvHeads * tiny.headDim * 4;
    expect(tokens).toBeGreaterThan(0);
    // Never more than one binding per layer: K of one layer is tokens * kvHeads * headDim f32s.
    expect(tokens * (f32Bytes / (2 * tiny.numLayers))).toBeLessThanOrEqual(probe!.maxBindingBytes);
    expect(gpu.kvCapacity({ ...budget, maxTotalTokens: 77 })).toBe(77);
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
    const schedule = new MixedSchedule(prompts, kv.pageSize, kv.numPages);
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
    expect(lines[0]).toMatch(/^BackendUnavailableError: webgpu: unavailable here: no WebGPU adapter \(.*install-vulkan\.sh/);
  });
});
