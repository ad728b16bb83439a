import { expect } from 'vitest';
import type { ForwardBatch, SamplingBatch, StepOutput } from '../../src/engine/backend.js';
import { pagedBatch } from './paged-batch.js';

/** What a device sampler returned for a step: tokens, their log-probs and the top alternatives (k per row). */
export interface SampledRows {
  tokens: ArrayLike<number>;
  logprobs: ArrayLike<number> | null;
  k: number;
  topIds: ArrayLike<number> | null;
  topLogprobs: ArrayLike<number> | null;
}

/** A step of one token per sequence, each in a page of its own: all a sampler test needs. */
export function oneTokenPerSequence(numSeqs: number, sampling: SamplingBatch): ForwardBatch {
  const steps = Array.from({ length: numSeqs }, (_, s) => ({ tokens: Int32Array.of(0), cached: 0, pages: Int32Array.of(s) }));
  return pagedBatch(steps, 1, sampling);
}

/** The webgpu sample kernel's output words: numSeqs tokens, numSeqs log-probs, then k ids and k log-probs per row. */
export function webgpuSampleWords(bytes: ArrayBuffer, numSeqs: number, k: number): SampledRows {
  const ids = new Int32Array(bytes);
  const floats = new Float32Array(bytes);
  return {
    tokens: ids.subarray(0, numSeqs),
    logprobs: floats.subarray(numSeqs, 2 * numSeqs),
    k,
    topIds: ids.subarray(2 * numSeqs, 2 * numSeqs + numSeqs * k),
    topLogprobs: floats.subarray(2 * numSeqs + numSeqs * k, 2 * numSeqs + 2 * numSeqs * k),
  };
}

/**
 * The device sampler chose the host sampler's tokens, and, for every row that asked for
 * log-probs, the same top alternatives, with log-probs within `tolerance`.
 */
export function expectHostSamples(got: SampledRows, want: StepOutput, sampling: SamplingBatch, tolerance: number): void {
  const numSeqs = sampling.temperature.length;
  expect(Array.from(got.tokens).slice(0, numSeqs)).toEqual(Array.from(want.tokens));
  for (let s = 0; s < numSeqs; s++) {
    const asked = sampling.logprobs[s]!;
    if (asked < 0) continue;
    expect(Math.abs(got.logprobs![s]! - want.logprobs![s]!)).toBeLessThan(tolerance);
    for (let j = 0; j < asked; j++) {
      const at = s * got.k + j;
      const wantAt = s * want.topLogprobs!.k + j;
      expect(got.topIds![at]).toBe(want.topLogprobs!.ids[wantAt]);
      expect(Math.abs(got.topLogprobs![at]! - want.topLogprobs!.logprobs[wantAt]!)).toBeLessThan(tolerance);
    }
  }
}
