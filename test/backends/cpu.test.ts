import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/engine/backend.js';
import { create, type CpuBackendOptions } from '../../backends/cpu/index.js';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import { defaultSegmentBytes, planSegments } from '../../backends/cpu/segment-plan.js';
import { buildSegmentModel } from '../../backends/cpu/segment-graph.js';
import { createBackend } from '../../backends/index.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import type { LlamaConfig, WeightDType } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { SingleSequence } from '../support/single-sequence.js';
import { UserError } from '../../src/errors.js';
import { MixedSchedule, mixedPrefillDecodeSteps, oddShapesConfig } from '../support/parity.js';
import { promptOf } from '../support/random-data.js';

async function loaded(backend: Backend, config: LlamaConfig, dtype: WeightDType, kv: { numPages: number; pageSize: number }) {
  await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 7, dtype) });
  await backend.allocateKvCache(kv);
  return backend;
}

/** Runs the same mixed schedule on both backends (the reference's tokens fed back) and compares each step. */
async function compareMixed(cpu: Backend, ref: Backend, prompts: number[][], steps: readonly number[][], pageSize: number, numPages: number) {
  const schedule = new MixedSchedule(prompts, pageSize, numPages, 7);
  let maxLogprobDiff = 0;
  let compared = 0;
  for (const [step, counts] of steps.entries()) {
    // Every third step asks for no log-probs: the backend then takes its in-graph argmax.
    const { batch, seqs } = schedule.next(counts, step % 3 === 2 ? -1 : 3);
    const expected = await ref.forward(batch);
    const actual = await cpu.forward(batch);
    expect(Array.from(actual.tokens)).toEqual(Array.from(expected.tokens));
    if (step % 3 === 2) {
      expect(actual.logprobs).toBeNull();
      schedule.advance(seqs, expected);
      continue;
    }
    expect(actual.topLogprobs!.k).toBe(3);
    expect(Array.from(actual.topLogprobs!.ids)).toEqual(Array.from(expected.topLogprobs!.ids));
    for (let i = 0; i < seqs.length; i++) {
      maxLogprobDiff = Math.max(maxLogprobDiff, Math.abs(actual.logprobs![i]! - expected.logprobs![i]!));
      compared++;
    }
    for (let i = 0; i < expected.topLogprobs!.logprobs.length; i++) {
      maxLogprobDiff = Math.max(maxLogprobDiff, Math.abs(actual.topLogprobs!.logprobs[i]! - expected.topLogprobs!.logprobs[i]!));
    }
    schedule.advance(seqs, expected);
  }
  return { maxLogprobDiff, compared };
}

const f32Options: CpuBackendOptions = { threads: 2, cpuWeights: 'f32' };

describe('cpu backend (onnxruntime-node) against the reference backend', () => {
  describe('tiny preset, f32 weights', () => {
    const config = presets.tiny!;
    let cpu: Backend;
    let ref: Backend;
    beforeAll(async () => {
      cpu = await loaded(await create(f32Options), config, 'f32', { numPages: 64, pageSize: 4 });
      ref = await loaded(new RefBackend(), config, 'f32', { numPages: 64, pageSize: 4 });
    });
    afterAll(async () => {
      await cpu?.close();
      await ref?.close();
    });

    it('describes itself', () => {
      expect(cpu.name).toBe('cpu');
      expect(cpu.description).toMatch(/onnxruntime-node .* 2 threads/);
    });

    it('matches greedy tokens and log-probs for one sequence', async () => {
      const prompt = [128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679];
      // SingleSequence uses slot = position: the reset cache of a fresh backend pair keeps this independent.
      const cpuOne = await loaded(await create(f32Options), config, 'f32', { numPages: 64, pageSize: 1 });
      const refOne = await loaded(new RefBackend(), config, 'f32', { numPages: 64, pageSize: 1 });
      const a = await new SingleSequence(cpuOne, 0).greedy(prompt, 16);
      const b = await new SingleSequence(refOne, 0).greedy(prompt, 16);
      await cpuOne.close();
      expect(a.tokens).toEqual(b.tokens);
      for (let i = 0; i < a.logprobs.length; i++) expect(a.logprobs[i]).toBeCloseTo(b.logprobs[i]!, 4);
    });

    it('matches on mixed prefill and decode batches over a paged cache (page size 4)', async () => {
      const prompts = [9, 6, 20, 12].map((n, s) => promptOf(n, s + 1, 128000));
      const { maxLogprobDiff, compared } = await compareMixed(cpu, ref, prompts, mixedPrefillDecodeSteps, 4, 64);
      expect(compared).toBeGreaterThan(15);
      expect(maxLogprobDiff).toBeLessThan(1e-3);
    });
  });

  describe('odd shapes (5 heads over 1 KV head, head dim 6, untied lm-head), page size 3', () => {
    it.each([1 << 30, 1])('matches with segments of at most %i bytes', async (segmentBytes) => {
      const cpu = await loaded(await create({ ...f32Options, segmentBytes }), oddShapesConfig, 'f32', { numPages: 40, pageSize: 3 });
      const ref = await loaded(new RefBackend(), oddShapesConfig, 'f32', { numPages: 40, pageSize: 3 });
      const prompts = [7, 2, 11, 5].map((n, s) => promptOf(n, s + 11, oddShapesConfig.vocabSize));
      const { maxLogprobDiff } = await compareMixed(cpu, ref, prompts, mixedPrefillDecodeSteps, 3, 40);
      await cpu.close();
      expect(maxLogprobDiff).toBeLessThan(1e-3);
    });
  });

  it('runs BF16 checkpoints with 8-bit weights (q8) close to the reference', async () => {
    const config = { ...oddShapesConfig, hiddenSize: 64, intermediateSize: 96, numHeads: 4, numKvHeads: 2, headDim: 16 };
    const cpu = await loaded(await create({ threads: 2 }), config, 'bf16', { numPages: 32, pageSize: 4 });
    const ref = await loaded(new RefBackend(), config, 'bf16', { numPages: 32, pageSize: 4 });
    const prompts = [7, 2, 11, 5].map((n, s) => promptOf(n, s + 21, config.vocabSize));
    const schedule = new MixedSchedule(prompts, 4, 32, 7);
    let maxDiff = 0;
    for (const counts of mixedPrefillDecodeSteps) {
      const { batch, seqs } = schedule.next(counts, 5);
      const expected = await ref.forward(batch);
      const actual = await cpu.forward(batch);
      // Compare the distributions on the reference's top-5 tokens.
      for (let i = 0; i < seqs.length * 5; i++) {
        const id = expected.topLogprobs!.ids[i]!;
        const row = Math.floor(i / 5);
        const at = Array.from(actual.topLogprobs!.ids.subarray(row * 5, row * 5 + 5)).indexOf(id);
        if (at >= 0) maxDiff = Math.max(maxDiff, Math.abs(actual.topLogprobs!.logprobs[row * 5 + at]! - expected.topLogprobs!.logprobs[i]!));
      }
      expect(actual.topLogprobs!.ids[0]).toBeDefined();
      schedule.advance(seqs, expected);
    }
    await cpu.close();
    expect(maxDiff).toBeGreaterThan(0);
    expect(maxDiff).toBeLessThan(0.1);
  });

  it('is what createBackend("cpu") returns, with the thread count asked for', async () => {
    const backend = await createBackend('cpu', { threads: 1 });
    expect(backend.name).toBe('cpu');
    expect(backend.description).toMatch(/, 1 thread$/);
  });

  it('rejects a token id outside the vocabulary with a clear error', async () => {
    const cpu = await loaded(await create(f32Options), oddShapesConfig, 'f32', { numPages: 8, pageSize: 4 });
    const { batch } = new MixedSchedule([[1, 2, oddShapesConfig.vocabSize + 5]], 4, 8, 7).next([3], -1);
    await expect(cpu.forward(batch)).rejects.toThrow(UserError);
    await expect(cpu.forward(batch)).rejects.toThrow(/token id 306 is outside the vocabulary/);
    await cpu.close();
  });

  it('compiles the linears that read one input as one GEMM (q/k/v, gate/up)', async () => {
    const config = oddShapesConfig;
    const graph = buildLlamaGraph(config);
    const whole = { startOp: 1, endOp: graph.ops.length, firstLayer: 0, endLayer: config.numLayers, withHead: true };
    const { bytes } = await buildSegmentModel(config, graph, new DummyWeights(config, 0, 'f32'), whole, 'f32');
    const { onnx } = onnxProto as unknown as { onnx: typeof OnnxTypes };
    const gemms = onnx.ModelProto.decode(bytes).graph!.node!.filter((n) => n.opType === 'Gemm').length;
    expect(gemms).toBe(4 * config.numLayers + 1); // qkv, o, gate_up, down per layer; the lm-head
  });

  it('splits layers into segments by stored weight bytes', () => {
    const config = presets['llama-3.2-1b']!;
    const graph = buildLlamaGraph(config);
    const one = planSegments(graph, 'q8', 2 ** 31);
    // The embedding (op 0) is looked up on the host; the head (gather_last on) is a session of its own, run per chunk of logits rows.
    const head = graph.ops.findIndex((op) => op.op === 'gather_last');
    expect(one).toEqual([
      { startOp: 1, endOp: head, firstLayer: 0, endLayer: 16, withHead: false },
      { startOp: head, endOp: graph.ops.length, firstLayer: 16, endLayer: 16, withHead: true },
    ]);
    const several = planSegments(graph, 'f32', 2 ** 30);
    expect(several.at(-1)).toEqual({ startOp: head, endOp: graph.ops.length, firstLayer: 16, endLayer: 16, withHead: true });
    expect(several.every((s, i) => i === 0 || (s.firstLayer === several[i - 1]!.endLayer && s.startOp === several[i - 1]!.endOp))).toBe(true);
    expect(several.every((s, i) => i >= several.length - 2 || graph.layerStart.includes(s.endOp))).toBe(true);
    expect(several.at(-2)!.endLayer).toBe(16);
    expect(several.length).toBeGreaterThan(4);
  });

  it('halves the default segment only for models over 4 GiB of stored weights', () => {
    const gib = 2 ** 30;
    const small = buildLlamaGraph(presets['llama-3.2-1b']!);
    const big = buildLlamaGraph(presets['llama-3.1-8b']!);
    expect(defaultSegmentBytes(small, 'q8')).toBe(1.25 * gib);
    expect(defaultSegmentBytes(big, 'q8')).toBe(0.625 * gib);
    // The same 1B model in f32 stores ~5 GiB.
    expect(defaultSegmentBytes(small, 'f32')).toBe(0.625 * gib);
    // The 1B q8 layers stay one session: a small model pays no extra session runs.
    expect(planSegments(small, 'q8', defaultSegmentBytes(small, 'q8'))).toHaveLength(2);
    expect(planSegments(big, 'q8', defaultSegmentBytes(big, 'q8')).length).toBeGreaterThan(8);
  });
});
