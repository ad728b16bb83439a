import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ops from '../../backends/ref/ops.js';
import * as k from '../../backends/webgpu/kernels.js';
import { bf16ToF16, uploadMatrix, uploadVector } from '../../backends/webgpu/weights.js';
import type { PenaltyBatch, SamplingBatch } from '../../src/engine/backend.js';
import { bf16ToF32, f16ToF32, f32ToF16 } from '../../src/model/dtype.js';
import { presets } from '../../src/model/presets.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { sampleLogits } from '../../backends/shared/host-sampler.js';
import { packStep } from '../../backends/webgpu/step-inputs.js';
import { greedySampling, pagedBatch } from '../support/paged-batch.js';
import { maxRelativeError } from '../support/parity.js';
import { expectHostSamples, oneTokenPerSequence, webgpuSampleWords } from '../support/sampler-checks.js';
import { randomData } from '../support/random-data.js';
import { KernelHarness, openGpuForTests } from '../support/webgpu-harness.js';

const ctx = await openGpuForTests();

describe('webgpu weight conversion', () => {
  it('converts every bf16 bit pattern to the f16 that rounding its value gives', () => {
    const mismatches: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const want = f32ToF16(bf16ToF32(h));
      const got = bf16ToF16(h);
      if (got !== want && !(Number.isNaN(f16ToF32(got)) && Number.isNaN(f16ToF32(want)))) mismatches.push(h);
    }
    expect(mismatches).toEqual([]);
  });
});

describe.skipIf(ctx === null)('webgpu kernels against backends/ref/ops.ts', () => {
  const gpu = ctx!;
  let h: KernelHarness;
  const random = randomData(1234);
  beforeAll(() => {
    h = new KernelHarness(gpu);
  });
  afterAll(() => {
    h.destroy();
    gpu.destroy();
  });

  /** What the device computes with: weights rounded to f16 when it stores them so. */
  const asStored = (w: Float32Array) => (gpu.f16Weights ? w.map((x) => f16ToF32(f32ToF16(x))) : w);
  const f32Bytes = (w: Float32Array) => new Uint8Array(w.buffer, w.byteOffset, w.byteLength);

  it('embedding gathers rows from a table split across bindings', async () => {
    const [rows, cols, tokens] = [37, 13, 11];
    const table = random.uniform(rows * cols);
    const ids = Int32Array.from({ length: tokens }, () => random.int(0, rows - 1));
    const matrix = uploadMatrix(gpu, 'table', f32Bytes(table), 'f32', rows, cols, 10 * cols * (gpu.f16Weights ? 2 : 4));
    expect(matrix.chunks.length).toBeGreaterThan(2);
    const out = h.zeros(tokens * cols);
    await h.run(k.embedding(gpu, h.step, matrix, h.upload(ids), out), { numTokens: tokens });
    const expected = new Float32Array(tokens * cols);
    ops.embedding(asStored(table), cols, ids, expected);
    expect(await h.readF32(out, tokens * cols)).toEqual(expected);
  });

  for (const [rows, cols] of [
    [1, 64],
    [5, 77],
    [3, 515],
  ] as const) {
    it(`rmsnorm and add_rmsnorm over ${rows} x ${cols}`, async () => {
      const x = random.uniform(rows * cols, 2);
      const residual = random.uniform(rows * cols);
      const weight = random.uniform(cols);
      const xBuf = h.upload(x.slice());
      const out = h.zeros(rows * cols);
      const args = { x: xBuf, residual: null, weight: uploadVector(gpu, 'w', weight), out, cols, rows: 'tokens' as const, eps: 1e-5, placeholder: h.zeros(4) };
      await h.run([k.rmsnorm(gpu, h.step, args)], { numTokens: rows });
      const expected = new Float32Array(rows * cols);
      ops.rmsnorm(x, weight, rows, 1e-5, expected);
      expect(maxRelativeError(await h.readF32(out, rows * cols), expected)).toBeLessThan(1e-4);

      await h.run([k.rmsnorm(gpu, h.step, { ...args, residual: h.upload(residual) })], { numTokens: rows });
      const summed = x.slice();
      ops.add(summed, residual, summed.length);
      ops.rmsnorm(summed, weight, rows, 1e-5, expected);
      expect(maxRelativeError(await h.readF32(xBuf, rows * cols), summed)).toBeLessThan(1e-6);
      expect(maxRelativeError(await h.readF32(out, rows * cols), expected)).toBeLessThan(1e-4);
    });
  }

  for (const [rows, inFeatures, outFeatures, chunkRows] of [
    [1, 64, 96, 96],
    [5, 48, 70, 30],
    [3, 37, 53, 20],
    [8, 130, 41, 41],
    [9, 37, 70, 33],
    [70, 100, 129, 50],
  ] as const) {
    it(`linear ${rows} x ${inFeatures} -> ${outFeatures} (weight chunks of ${chunkRows} rows)`, async () => {
      const x = random.uniform(rows * inFeatures);
      const weight = random.uniform(outFeatures * inFeatures);
      const matrix = uploadMatrix(gpu, 'w', f32Bytes(weight), 'f32', outFeatures, inFeatures, chunkRows * inFeatures * 4);
      const out = h.zeros(rows * outFeatures);
      await h.run(k.linear(gpu, h.step, h.upload(x), matrix, out, 'tokens'), { numTokens: rows });
      const expected = new Float32Array(rows * outFeatures);
      ops.linear(x, asStored(weight), rows, inFeatures, expected);
      expect(maxRelativeError(await h.readF32(out, rows * outFeatures), expected)).toBeLessThan(1e-3);
    });
  }

  it('linear reads its rows from the "seqs" count when asked', async () => {
    const [numSeqs, inFeatures, outFeatures] = [2, 24, 10];
    const x = random.uniform(numSeqs * inFeatures);
    const weight = random.uniform(outFeatures * inFeatures);
    const out = h.zeros(numSeqs * outFeatures);
    const matrix = uploadMatrix(gpu, 'w', f32Bytes(weight), 'f32', outFeatures, inFeatures);
    await h.run(k.linear(gpu, h.step, h.upload(x), matrix, out, 'seqs'), { numTokens: 50, numSeqs });
    const expected = new Float32Array(numSeqs * outFeatures);
    ops.linear(x, asStored(weight), numSeqs, inFeatures, expected);
    expect(maxRelativeError(await h.readF32(out, numSeqs * outFeatures), expected)).toBeLessThan(1e-4);
  });

  it('rope with llama3 frequency scaling rotates q and k at each position', async () => {
    const heads = { numHeads: 6, numKvHeads: 2, headDim: 16 };
    const invFreq = ropeInverseFrequencies({ ...presets['llama-3.1-8b']!, headDim: heads.headDim });
    const tokens = 7;
    const positions = Int32Array.from({ length: tokens }, () => random.int(0, 2999));
    const q = random.uniform(tokens * heads.numHeads * heads.headDim);
    const kk = random.uniform(tokens * heads.numKvHeads * heads.headDim);
    const qBuf = h.upload(q.slice());
    const kBuf = h.upload(kk.slice());
    await h.run([k.rope(gpu, h.step, qBuf, kBuf, h.upload(positions), uploadVector(gpu, 'f', Float32Array.from(invFreq)), heads)], { numTokens: tokens });
    ops.rope(q, positions, heads.numHeads, heads.headDim, invFreq);
    ops.rope(kk, positions, heads.numKvHeads, heads.headDim, invFreq);
    // f32 angles at positions in the thousands: a few 1e-4 of a unit vector.
    expect(maxRelativeError(await h.readF32(qBuf, q.length), q, 1e-2)).toBeLessThan(1e-2);
    expect(maxRelativeError(await h.readF32(kBuf, kk.length), kk, 1e-2)).toBeLessThan(1e-2);
  });

  it('silu_mul, add and gather_last', async () => {
    const [rows, cols] = [9, 33];
    const gate = random.uniform(rows * cols, 4);
    const up = random.uniform(rows * cols);
    const out = h.zeros(rows * cols);
    await h.run([k.siluMul(gpu, h.step, h.upload(gate), h.upload(up), out, cols, 'tokens')], { numTokens: rows });
    const expected = new Float32Array(rows * cols);
    ops.siluMul(gate, up, rows * cols, expected);
    expect(maxRelativeError(await h.readF32(out, rows * cols), expected)).toBeLessThan(1e-5);

    const x = random.uniform(rows * cols);
    const xBuf = h.upload(x.slice());
    await h.run([k.add(gpu, h.step, xBuf, h.upload(up), cols, 'tokens')], { numTokens: rows });
    ops.add(x, up, x.length);
    expect(await h.readF32(xBuf, x.length)).toEqual(x);

    const queryStart = Int32Array.of(0, 4, 5, 9);
    const meta = new Int32Array(rows + 3 * 3 + 2);
    meta.set(queryStart, rows);
    const last = h.zeros(3 * cols);
    await h.run([k.gatherLast(gpu, h.step, xBuf, h.upload(meta), last, cols)], { numTokens: rows, numSeqs: 3 });
    const expectedLast = new Float32Array(3 * cols);
    ops.gatherLast(x, cols, queryStart, expectedLast);
    expect(await h.readF32(last, 3 * cols)).toEqual(expectedLast);
  });

  describe('paged attention', () => {
    const heads = { numHeads: 6, numKvHeads: 2, headDim: 20 };
    const kvCols = heads.numKvHeads * heads.headDim;
    const pageSize = 3;
    const numPages = 80;

    /** Sequences with (tokens already cached, new tokens): a decode, prefill chunks, a fresh prompt. */
    async function check(seqs: [number, number][], splitSize: number | null) {
      const pagesShuffled = Array.from({ length: numPages }, (_, i) => i).sort(() => random.next() - 0.5);
      const batch = pagedBatch(
        seqs.map(([cached, fresh]) => ({ tokens: new Int32Array(fresh), cached, pages: pagesShuffled.splice(0, Math.ceil((cached + fresh) / pageSize)) })),
        pageSize,
        greedySampling(seqs.length),
      );
      const numTokens = batch.tokenIds.length;
      const layout = { ...heads, pageSize, ...batch };
      const q = random.uniform(numTokens * heads.numHeads * heads.headDim);
      const kNew = random.uniform(numTokens * kvCols);
      const vNew = random.uniform(numTokens * kvCols);
      // Earlier positions are already in the cache: random contents everywhere.
      const kCache = random.uniform(numPages * pageSize * kvCols);
      const vCache = random.uniform(numPages * pageSize * kvCols);
      const kCacheBuf = h.upload(kCache.slice());
      const vCacheBuf = h.upload(vCache.slice());
      const packed = packStep(batch);
      const maxKv = Math.max(...batch.kvLens);
      const numSplits = splitSize ? Math.ceil(maxKv / splitSize) : 1;
      const out = h.zeros(q.length);
      const dispatches = k.attention(
        gpu,
        h.step,
        {
          q: h.upload(q),
          k: h.upload(kNew),
          v: h.upload(vNew),
          kCache: kCacheBuf,
          vCache: vCacheBuf,
          slotMapping: h.upload(layout.slotMapping),
          meta: h.upload(packed.meta),
          pageTable: h.upload(layout.pageTable),
          partials: h.zeros(numTokens * heads.numHeads * numSplits * (heads.headDim + 2)),
          out,
          pageSize,
        },
        heads,
      );
      await h.run(dispatches, { numTokens, numSeqs: seqs.length, numSplits, splitSize: splitSize ?? maxKv });
      const expected = new Float32Array(q.length);
      ops.pagedAttention(q, kNew, vNew, kCache, vCache, layout, expected);
      expect(maxRelativeError(await h.readF32(kCacheBuf, kCache.length), kCache)).toBe(0);
      expect(maxRelativeError(await h.readF32(vCacheBuf, vCache.length), vCache)).toBe(0);
      expect(maxRelativeError(await h.readF32(out, q.length), expected)).toBeLessThan(1e-4);
    }

    it('mixes prefill chunks and decode tokens (GQA, page size 3, shuffled pages)', async () => {
      await check([[0, 7], [10, 1], [4, 5], [0, 1], [70, 1]], null);
    });

    it('splits long contexts over the KV length and merges the splits', async () => {
      await check([[100, 1], [37, 1], [5, 3]], 16);
      await check([[0, 9], [65, 1]], 7);
    });
  });

  describe('sampling on the GPU matches backends/shared/host-sampler.ts', () => {
    const vocab = 997;

    async function sampleOnGpu(logits: Float32Array, sampling: SamplingBatch) {
      const numSeqs = sampling.temperature.length;
      const packed = packStep(oneTokenPerSequence(numSeqs, sampling));
      const topLogprobs = Math.max(0, packed.maxLogprobs);
      const words = k.sampleOutputWords(numSeqs, topLogprobs);
      const out = h.upload(new Uint32Array(words));
      const logitsBuf = h.upload(logits);
      await h.run(
        [
          k.penalties(gpu, h.step, logitsBuf, h.upload(packed.penaltyEntries), h.upload(packed.seqPenalties), vocab),
          k.sample(gpu, h.step, logitsBuf, h.upload(packed.seqSampling), out, vocab),
        ],
        { numTokens: numSeqs, numSeqs, numPenalties: packed.penaltyEntries.length / 3, topLogprobs },
      );
      return webgpuSampleWords(await h.readBytes(out, words * 4), numSeqs, topLogprobs);
    }

    function randomLogits(numSeqs: number): Float32Array {
      const logits = random.uniform(numSeqs * vocab, 4);
      // Exact ties (the rule breaks them by the lower id) and a peaked row.
      logits[10] = logits[20] = logits[500] = 6;
      for (let i = 0; i < vocab; i += 7) logits[vocab + i] = 1.5;
      return logits;
    }

    const settings: [string, Partial<Record<'temperature' | 'topP' | 'minP', number>> & { topK?: number }][] = [
      ['greedy', { temperature: 0 }],
      ['temperature', { temperature: 0.8 }],
      ['top-k', { temperature: 1.3, topK: 5 }],
      ['top-p', { temperature: 1, topP: 0.3 }],
      ['min-p', { temperature: 0.7, minP: 0.2 }],
      ['all together', { temperature: 0.9, topK: 40, topP: 0.8, minP: 0.05 }],
      ['top-k 1', { temperature: 2, topK: 1 }],
    ];

    for (const [name, s] of settings) {
      it(`${name}: same tokens for many uniform draws, with log-probs`, async () => {
        const numSeqs = 6;
        const sampling: SamplingBatch = {
          temperature: new Float32Array(numSeqs).fill(s.temperature ?? 0),
          topP: new Float32Array(numSeqs).fill(s.topP ?? 1),
          topK: new Int32Array(numSeqs).fill(s.topK ?? 0),
          minP: new Float32Array(numSeqs).fill(s.minP ?? 0),
          random: Float32Array.from({ length: numSeqs }, (_, i) => [0, 0.999, 0.5][i] ?? random.next()),
          logprobs: Int32Array.from({ length: numSeqs }, (_, i) => [-1, 0, 3][i % 3]!),
          penalties: null,
        };
        const logits = randomLogits(numSeqs);
        const got = await sampleOnGpu(logits.slice(), sampling);
        expectHostSamples(got, sampleLogits(logits.slice(), vocab, sampling), sampling, 5e-5);
      });
    }

    it('applies repetition, frequency and presence penalties before choosing', async () => {
      const numSeqs = 3;
      const logits = randomLogits(numSeqs);
      const top = (row: number) => Array.from(logits.subarray(row * vocab, (row + 1) * vocab)).indexOf(Math.max(...logits.subarray(row * vocab, (row + 1) * vocab)));
      const penalties: PenaltyBatch = {
        repetition: Float32Array.of(1.5, 1, 1.2),
        frequency: Float32Array.of(0, 2, 0.5),
        presence: Float32Array.of(0, 1, 0.5),
        tokenStart: Int32Array.of(0, 2, 4, 7),
        tokenIds: Int32Array.of(10, 3, top(1), 9, top(2), 1, 996),
        outputCounts: Int32Array.of(0, 1, 3, 0, 2, 0, 1),
      };
      const sampling: SamplingBatch = {
        temperature: Float32Array.of(0, 0, 0.5),
        topP: Float32Array.of(1, 1, 0.9),
        topK: Int32Array.of(0, 0, 20),
        minP: new Float32Array(numSeqs),
        random: Float32Array.of(0, 0, 0.4),
        logprobs: Int32Array.of(2, 0, 1),
        penalties,
      };
      const got = await sampleOnGpu(logits.slice(), sampling);
      expectHostSamples(got, sampleLogits(logits.slice(), vocab, sampling), sampling, 5e-5);
    });
  });
});
