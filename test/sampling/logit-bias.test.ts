import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleLogits } from '../../backends/shared/host-sampler.js';
import * as k from '../../backends/webgpu/kernels.js';
import { packStep } from '../../backends/webgpu/step-inputs.js';
import type { LogitBiasBatch, PenaltyBatch, SamplingBatch } from '../../src/engine/backend.js';
import { cudaForTests, samplerHarness } from '../support/cuda-harness.js';
import { expectHostSamples, oneTokenPerSequence, webgpuSampleWords } from '../support/sampler-checks.js';
import { randomData } from '../support/random-data.js';
import { KernelHarness, openGpuForTests } from '../support/webgpu-harness.js';

// A device's log-probs against the host sampler's: f32 sums in another order.
const gpuLogprobTolerance = 5e-5;

/**
 * logit_bias and min_tokens reach every backend as a sparse per-row list (LogitBiasBatch): each
 * backend must give exactly what adding each bias to its logit by hand gives (-inf bans).
 */

type Row = Map<number, number> | null;

/** Per row: +100 on one id (forces it), a few random biases, bans (-inf) next to the best id, a row with none, a row banning its tie. */
function randomBiases(numSeqs: number, vocab: number, seed: number): Row[] {
  const random = randomData(seed);
  return Array.from({ length: numSeqs }, (_, s) => {
    if (s % 5 === 4) return null;
    const row = new Map<number, number>();
    for (let i = 0; i < 6; i++) row.set(random.int(0, vocab - 1), Math.round((random.next() * 200 - 100) * 4) / 4);
    if (s % 5 === 0) row.set(random.int(0, vocab - 1), 100);
    if (s % 5 === 1) for (let i = 0; i < 3; i++) row.set(random.int(0, vocab - 1), -Infinity);
    if (s % 5 === 2) row.set(10, -Infinity); // one of the tied best ids (see tiedLogits)
    if (s % 5 === 3) row.set(30, 2); // lifts id 30 to tie with the best ids exactly
    return row;
  });
}

function biasBatch(rows: Row[]): LogitBiasBatch {
  const rowStart = new Int32Array(rows.length + 1);
  const ids: number[] = [];
  const bias: number[] = [];
  rows.forEach((row, s) => {
    for (const [id, b] of row ?? []) {
      ids.push(id);
      bias.push(b);
    }
    rowStart[s + 1] = ids.length;
  });
  return { rowStart, tokenIds: Int32Array.from(ids), bias: Float32Array.from(bias) };
}

/** The plain way: each bias added to its logit, one id at a time. */
function biasPlainly(logits: Float32Array, vocab: number, rows: Row[]): Float32Array {
  const out = logits.slice();
  rows.forEach((row, s) => {
    for (const [id, b] of row ?? []) out[s * vocab + id] += b;
  });
  return out;
}

/** Random logits in [-4, 4) with exact ties at ids 10, 20 (6) and 30 (4: +2 ties it). */
function tiedLogits(numSeqs: number, vocab: number, seed: number): Float32Array {
  const logits = randomData(seed).uniform(numSeqs * vocab, 4);
  for (let s = 0; s < numSeqs; s++) {
    logits[s * vocab + 10] = logits[s * vocab + 20] = 6;
    logits[s * vocab + 30] = 4;
  }
  return logits;
}

/** Greedy and sampled rows, top-k / top-p on some, log-probs (with top alternatives) on most. */
function samplingFor(numSeqs: number, seed: number, topLogprobs: number, penalties: PenaltyBatch | null): SamplingBatch {
  const random = randomData(seed + 100);
  return {
    temperature: Float32Array.from({ length: numSeqs }, (_, s) => (s % 2 === 0 ? 0 : 0.8)),
    topP: Float32Array.from({ length: numSeqs }, (_, s) => (s % 3 === 1 ? 0.9 : 1)),
    topK: Int32Array.from({ length: numSeqs }, (_, s) => (s % 4 === 3 ? 10 : 0)),
    minP: new Float32Array(numSeqs),
    random: Float32Array.from({ length: numSeqs }, () => random.next()),
    logprobs: Int32Array.from({ length: numSeqs }, (_, s) => [topLogprobs, 0, -1][s % 3]!),
    penalties,
  };
}

/** Repetition and frequency penalties on a few ids of each row, some of them biased too: the bias must come first. */
function somePenalties(rows: Row[]): PenaltyBatch {
  const numSeqs = rows.length;
  const tokenStart = new Int32Array(numSeqs + 1);
  const ids: number[] = [];
  const counts: number[] = [];
  rows.forEach((row, s) => {
    for (const id of new Set([10, 30, ...[...(row ?? new Map()).keys()].slice(0, 2)])) {
      ids.push(id);
      counts.push(id % 2);
    }
    tokenStart[s + 1] = ids.length;
  });
  return {
    repetition: new Float32Array(numSeqs).fill(1.3),
    frequency: new Float32Array(numSeqs).fill(0.5),
    presence: new Float32Array(numSeqs).fill(0.25),
    tokenStart,
    tokenIds: Int32Array.from(ids),
    outputCounts: Int32Array.from(counts),
  };
}

describe('logit bias in the host sampler (ref, cpu) matches adding each bias plainly', () => {
  const vocab = 1000;
  for (const seed of [1, 2, 3]) {
    for (const withPenalties of [false, true]) {
      it(`seed ${seed}${withPenalties ? ', with penalties after the bias' : ''}: same tokens, log-probs and top log-probs; banned ids never chosen`, () => {
        const numSeqs = 10;
        const rows = randomBiases(numSeqs, vocab, seed);
        const logits = tiedLogits(numSeqs, vocab, seed);
        const sampling = samplingFor(numSeqs, seed, 3, withPenalties ? somePenalties(rows) : null);
        const got = sampleLogits(logits.slice(), vocab, { ...sampling, logitBias: biasBatch(rows) });
        const want = sampleLogits(biasPlainly(logits, vocab, rows), vocab, sampling);
        expect(Array.from(got.tokens)).toEqual(Array.from(want.tokens));
        expect(Array.from(got.logprobs!)).toEqual(Array.from(want.logprobs!));
        expect(Array.from(got.topLogprobs!.ids)).toEqual(Array.from(want.topLogprobs!.ids));
        expect(Array.from(got.topLogprobs!.logprobs)).toEqual(Array.from(want.topLogprobs!.logprobs));
        rows.forEach((row, s) => {
          expect(row?.get(got.tokens[s]!)).not.toBe(-Infinity);
          const forced = [...(row ?? [])].find(([, b]) => b === 100)?.[0];
          if (forced !== undefined && sampling.temperature[s] === 0) expect(got.tokens[s]).toBe(forced);
        });
      });
    }
  }

  it('greedy: a bias that creates a tie goes to the lower id; banning the best of a tie picks the other; log-probs are after the bias', () => {
    const logits = new Float32Array(vocab).fill(0);
    logits[50] = logits[60] = 3;
    logits[40] = 1;
    const sampling = { ...samplingFor(3, 1, 2, null), temperature: new Float32Array(3), logprobs: Int32Array.of(2, 2, 2) };
    const rows: Row[] = [new Map([[40, 2]]), new Map([[50, -Infinity]]), new Map([[999, 100]])];
    const all = new Float32Array(3 * vocab);
    for (let s = 0; s < 3; s++) all.set(logits, s * vocab);
    const out = sampleLogits(all, vocab, { ...sampling, logitBias: biasBatch(rows) });
    expect(Array.from(out.tokens)).toEqual([40, 60, 999]);
    const lse = Math.log(997 + 3 * Math.exp(3));
    expect(out.logprobs![0]).toBeCloseTo(3 - lse, 5);
    expect(Array.from(out.topLogprobs!.ids.subarray(0, 2))).toEqual([40, 50]);
    expect(out.logprobs![2]).toBeCloseTo(0, 5); // +100 leaves the rest ~e^-97 of the mass
  });
});

const gpu = await openGpuForTests();

describe.skipIf(gpu === null)('logit bias on the webgpu sampler (shaders/logit_bias.wgsl) matches the host sampler', () => {
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
    it(`seed ${seed}, with penalties: same tokens, log-probs and top log-probs`, async () => {
      const numSeqs = 10;
      const rows = randomBiases(numSeqs, vocab, seed);
      const sampling: SamplingBatch = { ...samplingFor(numSeqs, seed, 2, somePenalties(rows)), logitBias: biasBatch(rows) };
      const logits = tiedLogits(numSeqs, vocab, seed);
      const packed = packStep(oneTokenPerSequence(numSeqs, sampling));
      const topLogprobs = Math.max(0, packed.maxLogprobs);
      const words = k.sampleOutputWords(numSeqs, topLogprobs);
      const out = h.upload(new Uint32Array(words));
      const logitsBuf = h.upload(logits.slice());
      await h.run(
        [
          k.logitBias(gpu!, h.step, logitsBuf, h.upload(packed.biasEntries), vocab),
          k.penalties(gpu!, h.step, logitsBuf, h.upload(packed.penaltyEntries), h.upload(packed.seqPenalties), vocab),
          k.sample(gpu!, h.step, logitsBuf, h.upload(packed.seqSampling), out, vocab),
        ],
        { numTokens: numSeqs, numSeqs, topLogprobs, numPenalties: packed.penaltyEntries.length / 3, numBiases: packed.biasEntries.length / 3 },
      );
      const got = webgpuSampleWords(await h.readBytes(out, words * 4), numSeqs, topLogprobs);
      expectHostSamples(got, sampleLogits(logits.slice(), vocab, sampling), sampling, gpuLogprobTolerance);
    });
  }
});

const cuda = cudaForTests();

describe.skipIf(!cuda.gpu)(`logit bias on the cuda sampler (native/src/sampling.cu) matches the host sampler ${cuda.gpu ? `on ${cuda.gpu}` : cuda.skipReason}`, () => {
  for (const vocab of [997, 128256]) {
    it(`vocabulary of ${vocab}, with penalties: same tokens, log-probs and top log-probs`, async () => {
      const numSeqs = 10;
      const rows = randomBiases(numSeqs, vocab, vocab);
      const h = samplerHarness(cuda.addon!, vocab, numSeqs);
      try {
        const logits = tiedLogits(numSeqs, vocab, vocab);
        const sampling: SamplingBatch = { ...samplingFor(numSeqs, vocab, 2, somePenalties(rows)), logitBias: biasBatch(rows) };
        h.write('logits', logits);
        const out = await h.model.forward(oneTokenPerSequence(numSeqs, sampling));
        const got = { tokens: out.tokens, logprobs: out.logprobs, k: out.topK, topIds: out.topIds ?? null, topLogprobs: out.topLogprobs ?? null };
        expectHostSamples(got, sampleLogits(logits.slice(), vocab, sampling), sampling, 1e-3);
      } finally {
        h.close();
      }
    });
  }
});
