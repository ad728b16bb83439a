import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleLogits } from '../../backends/shared/host-sampler.js';
import * as k from '../../backends/webgpu/kernels.js';
import { packStep } from '../../backends/webgpu/step-inputs.js';
import type { SamplingBatch } from '../../src/engine/backend.js';
import { cudaForTests, samplerHarness } from '../support/cuda-harness.js';
import { expectHostSamples, oneTokenPerSequence, webgpuSampleWords } from '../support/sampler-checks.js';
import { KernelHarness, openGpuForTests } from '../support/webgpu-harness.js';
import { maskBatch, maskPlainly, maskSampling, randomAllowedSets, tiedLogits } from '../support/token-masks.js';

// A device's log-probs against the host sampler's: f32 sums in another order.
const gpuLogprobTolerance = 5e-5;

describe('token masks in the host sampler (ref, cpu) match masking each id plainly', () => {
  const vocab = 1000; // not a multiple of 32: the last word is partial
  for (const seed of [1, 2, 3]) {
    it(`random masks, seed ${seed}: same tokens, log-probs and top log-probs; only allowed ids chosen`, () => {
      const sets = randomAllowedSets(vocab, seed);
      const numSeqs = sets.length;
      const sampling = maskSampling(numSeqs, seed, 1);
      const logits = tiedLogits(numSeqs, vocab, seed, sets);
      const got = sampleLogits(logits.slice(), vocab, { ...sampling, tokenMask: maskBatch(sets, vocab) });
      const want = sampleLogits(maskPlainly(logits, vocab, sets), vocab, sampling);
      expect(Array.from(got.tokens)).toEqual(Array.from(want.tokens));
      expect(Array.from(got.logprobs!)).toEqual(Array.from(want.logprobs!));
      expect(Array.from(got.topLogprobs!.ids)).toEqual(Array.from(want.topLogprobs!.ids));
      expect(Array.from(got.topLogprobs!.logprobs)).toEqual(Array.from(want.topLogprobs!.logprobs));
      sets.forEach((set, s) => {
        if (set) expect(set.has(got.tokens[s]!)).toBe(true);
      });
    });
  }

  it('greedy ties among allowed ids go to the lowest allowed id; log-probs renormalize over the allowed ids', () => {
    const logits = new Float32Array(vocab).fill(0);
    logits[7] = logits[40] = logits[41] = 3;
    logits[5] = 10; // the best overall, disallowed
    const sets = [new Set([40, 41, 900])];
    const sampling = { ...maskSampling(1, 9, 0), logprobs: Int32Array.of(2) };
    const out = sampleLogits(logits, vocab, { ...sampling, tokenMask: maskBatch(sets, vocab) });
    expect(out.tokens[0]).toBe(40);
    const p = (x: number) => Math.exp(x);
    expect(p(out.topLogprobs!.logprobs[0]!) + p(out.topLogprobs!.logprobs[1]!) + Math.exp(0) / (2 * Math.exp(3) + 1)).toBeCloseTo(1, 5);
    expect(Array.from(out.topLogprobs!.ids)).toEqual([40, 41]);
  });
});

const gpu = await openGpuForTests();

describe.skipIf(gpu === null)('token masks on the webgpu sampler (shaders/token_mask.wgsl) match the host sampler', () => {
  const vocab = 997;
  let h: KernelHarness;
  beforeAll(() => {
    h = new KernelHarness(gpu!);
  });
  afterAll(() => {
    h.destroy();
    gpu!.destroy();
  });

  for (const seed of [1, 2]) {
    it(`random masks, seed ${seed}: same tokens, log-probs and top log-probs`, async () => {
      const sets = randomAllowedSets(vocab, seed);
      const numSeqs = sets.length;
      const sampling: SamplingBatch = { ...maskSampling(numSeqs, seed, 2), tokenMask: maskBatch(sets, vocab) };
      const logits = tiedLogits(numSeqs, vocab, seed, sets);
      const packed = packStep(oneTokenPerSequence(numSeqs, sampling));
      const topLogprobs = Math.max(0, packed.maxLogprobs);
      const words = k.sampleOutputWords(numSeqs, topLogprobs);
      const out = h.upload(new Uint32Array(words));
      const logitsBuf = h.upload(logits.slice());
      const seqSampling = h.upload(packed.seqSampling);
      await h.run(
        [k.tokenMask(gpu!, h.step, logitsBuf, seqSampling, h.upload(sampling.tokenMask!.bits), vocab), k.sample(gpu!, h.step, logitsBuf, seqSampling, out, vocab)],
        { numTokens: numSeqs, numSeqs, topLogprobs, maskedSeqs: packed.maskedSeqs },
      );
      const got = webgpuSampleWords(await h.readBytes(out, words * 4), numSeqs, topLogprobs);
      expectHostSamples(got, sampleLogits(logits.slice(), vocab, sampling), sampling, gpuLogprobTolerance);
    });
  }
});

const cuda = cudaForTests();

describe.skipIf(!cuda.gpu)(`token masks on the cuda sampler (native/src/sampling.cu) match the host sampler ${cuda.gpu ? `on ${cuda.gpu}` : cuda.skipReason}`, () => {
  for (const vocab of [997, 128256]) {
    it(`random masks over a vocabulary of ${vocab}: same tokens, log-probs and top log-probs`, async () => {
      const sets = randomAllowedSets(vocab, vocab);
      const numSeqs = sets.length;
      const h = samplerHarness(cuda.addon!, vocab, numSeqs);
      try {
        const logits = tiedLogits(numSeqs, vocab, vocab, sets);
        const sampling: SamplingBatch = { ...maskSampling(numSeqs, vocab, 2), tokenMask: maskBatch(sets, vocab) };
        h.write('logits', logits);
        const out = await h.model.forward(oneTokenPerSequence(numSeqs, sampling));
        const got = { tokens: out.tokens, logprobs: out.logprobs, k: out.topK, topIds: out.topIds ?? null, topLogprobs: out.topLogprobs ?? null };
        expectHostSamples(got, sampleLogits(logits.slice(), vocab, sampling), sampling, 1e-3);
      } finally {
        h.close();
      }
    });
  }

  it('a step in two calls (launchForward, then sampleLaunched with masks filled after the launch) samples as the host sampler does', async () => {
    const vocab = 128256;
    const sets = randomAllowedSets(vocab, 7);
    const numSeqs = sets.length;
    const h = samplerHarness(cuda.addon!, vocab, numSeqs);
    try {
      expect(typeof h.model.launchForward, 'the addon predates launchForward: rebuild it').toBe('function');
      await expect(h.model.sampleLaunched!(null)).rejects.toThrow(/no step was launched/);
      const logits = tiedLogits(numSeqs, vocab, 7, sets);
      h.write('logits', logits);
      const filled = maskBatch(sets, vocab);
      const sampling: SamplingBatch = { ...maskSampling(numSeqs, 7, 2), tokenMask: { ...filled, bits: new Int32Array(filled.bits.length) } };
      await h.model.launchForward!(oneTokenPerSequence(numSeqs, sampling));
      const got = await h.model.sampleLaunched!(filled);
      const want = sampleLogits(logits.slice(), vocab, { ...sampling, tokenMask: filled });
      expect(Array.from(got.tokens)).toEqual(Array.from(want.tokens));
      sets.forEach((set, s) => {
        if (set) expect(set.has(got.tokens[s]!)).toBe(true);
        if (sampling.logprobs[s]! >= 0) expect(Math.abs(got.logprobs![s]! - want.logprobs![s]!)).toBeLessThan(1e-3);
      });
    } finally {
      h.close();
    }
  });
});
