import { afterAll, describe, expect, it } from 'vitest';
import type { ForwardBatch, PenaltyBatch, SamplingBatch } from '../../src/engine/backend.js';
import * as ref from '../../backends/ref/ops.js';
import { greedySampling, pagedBatch } from '../support/paged-batch.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { sampleLogits } from '../../backends/shared/host-sampler.js';
import { expectClose } from '../support/parity.js';
import { randomData } from '../support/random-data.js';
import type { OpGraphSpec } from '../support/cuda-harness.js';
import { cudaForTests, OpHarness, roundBf16, singleSequenceBatch } from '../support/cuda-harness.js';
import { withVariant } from '../../backends/cuda/variants.js';

const { addon, gpu, skipReason } = cudaForTests();
// Fresh random shapes every run; the seed is in the test names so a failure can be replayed.
const seed = Number(process.env.SLUICE_TEST_SEED ?? Date.now() % 1_000_000);
const harnesses: OpHarness[] = [];
afterAll(() => harnesses.forEach((h) => h.close()));

function harness(spec: OpGraphSpec, kv?: { numPages: number; pageSize: number }, graphCapture = false): OpHarness {
  const h = OpHarness.create(addon!, spec, kv, graphCapture);
  harnesses.push(h);
  return h;
}

const llama3Rope = { ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } } as const;

function baseConfig(over: Partial<OpGraphSpec['config']> = {}): OpGraphSpec['config'] {
  return { hiddenSize: 64, intermediateSize: 128, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 64, rmsNormEps: 1e-5, ...llama3Rope, ...over };
}

/** Every op graph ends with a sample op over a small per-sequence logits buffer. */
const logitsActivation = (vocab: number) => ({ logits: { rows: 'seqs' as const, cols: vocab } });

/** Paged attention of q, k and v (the tokens' rows) into attn, over layer 0's KV cache. */
function attentionSpec(headDim: number, numHeads: number, numKvHeads: number): OpGraphSpec {
  return {
    config: baseConfig({ headDim, numHeads, numKvHeads }),
    activations: {
      q: { rows: 'tokens', cols: numHeads * headDim }, k: { rows: 'tokens', cols: numKvHeads * headDim },
      v: { rows: 'tokens', cols: numKvHeads * headDim }, attn: { rows: 'tokens', cols: numHeads * headDim }, ...logitsActivation(64),
    },
    ops: [{ op: 'attention', layer: 0, q: 'q', k: 'k', v: 'v', out: 'attn' }, { op: 'sample', logits: 'logits' }],
    weights: {},
  };
}

describe.skipIf(!gpu)(`cuda ops vs backends/ref/ops.ts (seed ${seed}) ${gpu ? `on ${gpu}` : skipReason}`, () => {
  const r = randomData(seed);

  it('embedding and rmsnorm of the f32 residual stream', async () => {
    const vocab = r.int(50, 400);
    const cols = 8 * r.int(4, 600);
    const T = r.int(1, 40);
    const table = roundBf16(r.uniform(vocab * cols));
    const norm = roundBf16(r.uniform(cols, 0.1).map((x) => 1 + x));
    const h = harness({
      config: baseConfig({ hiddenSize: cols, vocabSize: vocab }),
      activations: { x: { rows: 'tokens', cols }, h: { rows: 'tokens', cols }, ...logitsActivation(vocab) },
      ops: [
        { op: 'embedding', table: 'emb', out: 'x' },
        { op: 'rmsnorm', x: 'x', weight: 'norm', out: 'h' },
        { op: 'sample', logits: 'logits' },
      ],
      weights: { emb: { shape: [vocab, cols], values: table }, norm: { shape: [cols], values: norm } },
    }, { numPages: T, pageSize: 1 });
    const ids = Int32Array.from({ length: T }, () => r.int(0, vocab - 1));
    await h.model.forward(singleSequenceBatch(ids));
    const x = new Float32Array(T * cols);
    ref.embedding(table, cols, ids, x);
    expectClose(h.read('x', T), x, 0, 0, 'embedding');
    const want = new Float32Array(T * cols);
    ref.rmsnorm(x, norm, T, 1e-5, want);
    expectClose(h.read('h', T), want, 1e-2, 1e-2, `rmsnorm cols=${cols}`);
  });

  it('add_rmsnorm, add, silu_mul and rmsnorm of a bf16 buffer', async () => {
    const cols = 8 * r.int(4, 700);
    const T = r.int(1, 50);
    const vocab = 32;
    const table = roundBf16(r.uniform(vocab * cols));
    const norm = roundBf16(r.uniform(cols, 0.1).map((x) => 1 + x));
    const h = harness({
      config: baseConfig({ hiddenSize: cols, vocabSize: vocab }),
      activations: {
        x: { rows: 'tokens', cols }, res: { rows: 'tokens', cols }, h: { rows: 'tokens', cols }, y: { rows: 'tokens', cols },
        gate: { rows: 'tokens', cols }, up: { rows: 'tokens', cols }, act: { rows: 'tokens', cols }, hn: { rows: 'tokens', cols },
        ...logitsActivation(vocab),
      },
      ops: [
        { op: 'embedding', table: 'emb', out: 'x' },
        { op: 'add_rmsnorm', x: 'x', residual: 'res', weight: 'norm', out: 'h' },
        { op: 'silu_mul', gate: 'gate', up: 'up', out: 'act' },
        { op: 'rmsnorm', x: 'act', weight: 'norm', out: 'hn' },
        { op: 'add', x: 'x', y: 'y' },
        { op: 'sample', logits: 'logits' },
      ],
      weights: { emb: { shape: [vocab, cols], values: table }, norm: { shape: [cols], values: norm } },
    }, { numPages: T, pageSize: 1 });
    const res = roundBf16(r.uniform(T * cols, 2));
    const y = roundBf16(r.uniform(T * cols, 2));
    const gate = roundBf16(r.uniform(T * cols, 6));
    const up = roundBf16(r.uniform(T * cols, 2));
    h.write('res', res);
    h.write('y', y);
    h.write('gate', gate);
    h.write('up', up);
    const ids = Int32Array.from({ length: T }, () => r.int(0, vocab - 1));
    await h.model.forward(singleSequenceBatch(ids));

    const x = new Float32Array(T * cols);
    ref.embedding(table, cols, ids, x);
    ref.add(x, res, x.length);
    const hWant = new Float32Array(T * cols);
    ref.rmsnorm(x, norm, T, 1e-5, hWant);
    expectClose(h.read('h', T), hWant, 1e-2, 1e-2, 'add_rmsnorm out');
    const act = new Float32Array(T * cols);
    ref.siluMul(gate, up, act.length, act);
    expectClose(h.read('act', T), act, 1e-2, 1e-2, 'silu_mul');
    const hn = new Float32Array(T * cols);
    ref.rmsnorm(roundBf16(act), norm, T, 1e-5, hn);
    expectClose(h.read('hn', T), hn, 2e-2, 2e-2, 'rmsnorm of bf16');
    ref.add(x, y, x.length);
    expectClose(h.read('x', T), x, 1e-5, 1e-6, 'residual after add_rmsnorm and add');
  });

  const gemmPaths = {
    'cuBLASLt (when present)': { SLUICE_CUDA_GEMV: 'off' },
    'own tensor-core kernel': { SLUICE_NO_CUBLASLT: '1', SLUICE_CUDA_GEMV: 'off' },
    'bandwidth GEMV (m <= 16)': { SLUICE_CUDA_GEMV: 'on' },
  } as const;
  for (const [gemm, variant] of Object.entries(gemmPaths)) {
    it(`linear with ${gemm}: bf16 and f32 outputs, every element`, async () => {
      await withVariant(variant, async () => {
        const K = 8 * r.int(2, 300);
        const N = r.int(1, 700);
        const T = gemm.includes('GEMV') ? r.pick([1, 3, r.int(1, 12)]) : r.pick([1, 3, r.int(1, 130)]);
        const S = r.int(1, 5);
        const w = roundBf16(r.uniform(N * K, 1 / Math.sqrt(K)));
        const h = harness({
          config: baseConfig({ vocabSize: N }),
          activations: {
            a: { rows: 'tokens', cols: K }, out: { rows: 'tokens', cols: N },
            as: { rows: 'seqs', cols: K }, logits: { rows: 'seqs', cols: N },
          },
          ops: [
            { op: 'linear', x: 'a', weight: 'w', out: 'out' },
            { op: 'linear', x: 'as', weight: 'w', out: 'logits' },
            { op: 'sample', logits: 'logits' },
          ],
          weights: { w: { shape: [N, K], values: w } },
        }, { numPages: T + S, pageSize: 1 });
        if (gemm === 'own tensor-core kernel') expect(h.model.description()).toMatch(/own tensor-core kernel/);
        if (gemm.includes('GEMV')) expect(h.model.description()).toMatch(/GEMV for m <= 16(,|$)/);
        // S sequences sharing the tokens: the first takes all but S - 1 of them.
        const sizes = Array.from({ length: S }, (_, s) => (s === 0 ? Math.max(1, T - (S - 1)) : 1));
        const total = sizes.reduce((x, y) => x + y, 0);
        const a = roundBf16(r.uniform(total * K));
        const as = roundBf16(r.uniform(S * K));
        h.write('a', a);
        h.write('as', as);
        const batch = multiSequenceBatch(sizes, sizes, 1, Int32Array.from({ length: total + S }, (_, i) => i));
        await h.model.forward(batch);
        const want = new Float32Array(total * N);
        ref.linear(a, w, total, K, want);
        expectClose(h.read('out', total), want, 2e-2, 1e-2, `linear bf16 out m=${total} n=${N} k=${K}`);
        const wantF32 = new Float32Array(S * N);
        ref.linear(as, w, S, K, wantF32);
        expectClose(h.read('logits', S), wantF32, 1e-3, 1e-3, `linear f32 out m=${S} n=${N} k=${K}`);
      });
    });
  }

  it('rope with llama3 scaling at large positions', async () => {
    const headDim = r.pick([16, 64, 128]);
    const numKvHeads = r.int(1, 4);
    const numHeads = numKvHeads * r.int(1, 4);
    const T = r.int(1, 30);
    const config = baseConfig({ headDim, numHeads, numKvHeads });
    const h = harness({
      config,
      activations: { q: { rows: 'tokens', cols: numHeads * headDim }, k: { rows: 'tokens', cols: numKvHeads * headDim }, ...logitsActivation(64) },
      ops: [{ op: 'rope', q: 'q', k: 'k' }, { op: 'sample', logits: 'logits' }],
      weights: {},
    }, { numPages: T, pageSize: 1 });
    const q = roundBf16(r.uniform(T * numHeads * headDim));
    const k = roundBf16(r.uniform(T * numKvHeads * headDim));
    h.write('q', q);
    h.write('k', k);
    const positions = Int32Array.from({ length: T }, (_, i) => (i === 0 ? 0 : r.int(0, 131071)));
    const batch = singleSequenceBatch(new Int32Array(T));
    batch.positions = positions;
    await h.model.forward(batch);
    const invFreq = ropeInverseFrequencies({ headDim, ...llama3Rope });
    ref.rope(q, positions, numHeads, headDim, invFreq);
    ref.rope(k, positions, numKvHeads, headDim, invFreq);
    expectClose(h.read('q', T), q, 1e-2, 1e-2, 'rope q');
    expectClose(h.read('k', T), k, 1e-2, 1e-2, 'rope k');
  });

  it('gather_last picks each sequence\'s last row', async () => {
    const cols = r.int(1, 300) * 2;
    const sizes = Array.from({ length: r.int(1, 8) }, () => r.int(1, 9));
    const T = sizes.reduce((a, b) => a + b, 0);
    const h = harness({
      config: baseConfig(),
      activations: { x: { rows: 'tokens', cols }, last: { rows: 'seqs', cols }, ...logitsActivation(64) },
      ops: [{ op: 'gather_last', x: 'x', out: 'last' }, { op: 'sample', logits: 'logits' }],
      weights: {},
    }, { numPages: T, pageSize: 1 });
    const x = roundBf16(r.uniform(T * cols));
    h.write('x', x);
    const batch = multiSequenceBatch(sizes, sizes, 1, Int32Array.from({ length: T }, (_, i) => i));
    await h.model.forward(batch);
    const want = new Float32Array(sizes.length * cols);
    ref.gatherLast(x, cols, batch.queryStart, want);
    expectClose(h.read('last', sizes.length), want, 0, 0, 'gather_last');
  });

  for (const shape of ['prefill, extend over cached prefixes and decode, mixed', 'long decode (split-KV)'] as const) {
    it(`paged attention: ${shape}`, async () => {
      const headDim = r.pick([64, 128, 16]);
      const numKvHeads = r.int(1, 4);
      const group = r.pick([1, 2, 3, 4, 8]);
      const numHeads = numKvHeads * group;
      const pageSize = r.pick([1, 4, 16]);
      const S = shape === 'long decode (split-KV)' ? r.int(1, 3) : r.int(1, 6);
      // Per sequence: the cached prefix (written by a first step) and the new tokens of the second.
      const prefix = Array.from({ length: S }, () => (shape === 'long decode (split-KV)' ? r.int(1500, 4000) : r.pick([0, r.int(1, 300)])));
      const fresh = Array.from({ length: S }, (_, s) => (shape === 'long decode (split-KV)' ? 1 : prefix[s] === 0 ? r.int(1, 200) : r.pick([1, r.int(1, 100)])));
      const kvLens = prefix.map((p, s) => p + fresh[s]!);
      const pagesPer = kvLens.map((n) => Math.ceil(n / pageSize));
      const numPages = pagesPer.reduce((a, b) => a + b, 0) + 3;
      // A shuffled page table: sequences' pages interleave anywhere in the cache.
      const order = Int32Array.from({ length: numPages }, (_, i) => i);
      for (let i = numPages - 1; i > 0; i--) {
        const j = r.int(0, i);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const pageTable = order.subarray(0, pagesPer.reduce((a, b) => a + b, 0));
      const h = harness(attentionSpec(headDim, numHeads, numKvHeads), { numPages, pageSize });
      const kvCols = numKvHeads * headDim;
      const kCache = new Float32Array(numPages * pageSize * kvCols);
      const vCache = new Float32Array(numPages * pageSize * kvCols);
      const layoutOf = (b: ForwardBatch) => ({ ...b, numHeads, numKvHeads, headDim, pageSize });
      /** Random bf16 q, k and v for the batch's tokens, through the attention op on the device. */
      const feed = async (batch: ForwardBatch) => {
        const T = batch.tokenIds.length;
        const q = roundBf16(r.uniform(T * numHeads * headDim, 2));
        const k = roundBf16(r.uniform(T * kvCols, 2));
        const v = roundBf16(r.uniform(T * kvCols));
        h.write('q', q);
        h.write('k', k);
        h.write('v', v);
        await h.model.forward(batch);
        return { q, k, v, T };
      };
      /** The reference's attention output for what `feed` sent (it also writes k and v into the host caches). */
      const expected = (batch: ForwardBatch, { q, k, v, T }: Awaited<ReturnType<typeof feed>>) => {
        const want = new Float32Array(T * numHeads * headDim);
        ref.pagedAttention(q, k, v, kCache, vCache, layoutOf(batch), want);
        return want;
      };
      const withPrefix = prefix.map((p) => p > 0);
      if (withPrefix.some(Boolean)) {
        // Only sequences with a cached prefix take part in the first step.
        const seqs = prefix.map((p, s) => s).filter((s) => withPrefix[s]);
        const batch = multiSequenceBatch(seqs.map((s) => prefix[s]!), seqs.map((s) => prefix[s]!), pageSize, pageTable, pagesPer, seqs);
        const fed = await feed(batch);
        if (shape === 'long decode (split-KV)') {
          // Too long for the reference to attend in reasonable time: only store the prefix's K and V.
          batch.slotMapping.forEach((slot, t) => {
            kCache.set(fed.k.subarray(t * kvCols, (t + 1) * kvCols), slot * kvCols);
            vCache.set(fed.v.subarray(t * kvCols, (t + 1) * kvCols), slot * kvCols);
          });
        } else {
          expectClose(h.read('attn', fed.T), expected(batch, fed), 2e-2, 2e-2, `attention prefix step hd=${headDim} heads=${numHeads}/${numKvHeads} page=${pageSize}`);
        }
      }
      const batch = multiSequenceBatch(fresh, kvLens, pageSize, pageTable, pagesPer);
      const fed = await feed(batch);
      expectClose(h.read('attn', fed.T), expected(batch, fed), 2e-2, 2e-2, `attention hd=${headDim} heads=${numHeads}/${numKvHeads} page=${pageSize} kv=${kvLens} new=${fresh}`);
    });
  }

  it('decode steps replayed from CUDA graphs match the eager path', async () => {
    const headDim = 64;
    const numKvHeads = 2;
    const numHeads = 8;
    const S = r.int(2, 40);
    const pageSize = 4;
    const maxLen = 60;
    const pagesPer = Array.from({ length: S }, () => Math.ceil(maxLen / pageSize));
    const numPages = pagesPer.reduce((a, b) => a + b, 0);
    const pageTable = Int32Array.from({ length: numPages }, (_, i) => numPages - 1 - i);
    const spec = attentionSpec(headDim, numHeads, numKvHeads);
    const graphs = harness(spec, { numPages, pageSize }, true);
    const eager = harness(spec, { numPages, pageSize }, false);
    for (let len = 1; len <= 12; len++) {
      const batch = multiSequenceBatch(new Array(S).fill(1), new Array(S).fill(len), pageSize, pageTable, pagesPer);
      const q = roundBf16(r.uniform(S * numHeads * headDim));
      const k = roundBf16(r.uniform(S * numKvHeads * headDim));
      const v = roundBf16(r.uniform(S * numKvHeads * headDim));
      for (const h of [graphs, eager]) {
        h.write('q', q);
        h.write('k', k);
        h.write('v', v);
        await h.model.forward(batch);
      }
      expectClose(graphs.read('attn', S), eager.read('attn', S), 1e-2, 1e-2, `graph replay at length ${len}`);
    }
    expect(graphs.model.graphsCaptured()).toBe(1);
    expect(eager.model.graphsCaptured()).toBe(0);
  });

  for (const sampler of ['radix select', 'sort'] as const) it(`sampling on the device (${sampler}) follows backends/shared/host-sampler.ts (greedy, top-k, top-p, min-p, penalties, log-probs)`, () => withVariant({ SLUICE_CUDA_SAMPLER: sampler === 'sort' ? 'sort' : undefined }, async () => {
    const vocab = r.pick([r.int(64, 3000), r.int(3000, 140000)]);
    const S = r.int(1, 12);
    const h = harness({
      config: baseConfig({ vocabSize: vocab }),
      activations: { logits: { rows: 'seqs', cols: vocab } },
      ops: [{ op: 'sample', logits: 'logits' }],
      weights: {},
    }, { numPages: S, pageSize: 1 });
    for (let round = 0; round < 6; round++) {
      const logits = r.normal(S * vocab, 3);
      if (round === 1) for (let i = 0; i < logits.length; i++) logits[i] = Math.round(logits[i]!); // many ties
      const sampling: SamplingBatch = {
        temperature: Float32Array.from({ length: S }, () => r.pick([0, 0.7, 1, 1.3])),
        topP: Float32Array.from({ length: S }, () => r.pick([1, 0.9, 0.5])),
        topK: Int32Array.from({ length: S }, () => r.pick([0, 1, 20, vocab + 5])),
        minP: Float32Array.from({ length: S }, () => r.pick([0, 0.05, 0.2])),
        random: Float32Array.from({ length: S }, () => r.next()),
        logprobs: Int32Array.from({ length: S }, () => r.pick([-1, 0, 5])),
        penalties: round % 2 === 0 ? randomPenalties(S, vocab) : null,
      };
      h.write('logits', logits);
      const batch = multiSequenceBatch(new Array(S).fill(1), new Array(S).fill(1), 1, Int32Array.from({ length: S }, (_, i) => i));
      batch.sampling = sampling;
      const got = await h.model.forward(batch);
      const want = sampleLogits(Float32Array.from(logits), vocab, sampling);
      expect(Array.from(got.tokens), `round ${round} tokens`).toEqual(Array.from(want.tokens));
      if (want.logprobs) {
        const asked = Array.from(sampling.logprobs).map((k, s) => (k >= 0 ? s : -1)).filter((s) => s >= 0);
        for (const s of asked) expect(Math.abs(got.logprobs![s]! - want.logprobs[s]!)).toBeLessThan(1e-3);
      }
      if (want.topLogprobs) {
        expect(got.topK).toBe(want.topLogprobs.k);
        for (let s = 0; s < S; s++) {
          for (let i = 0; i < sampling.logprobs[s]!; i++) {
            const at = s * want.topLogprobs.k + i;
            expect(got.topIds![at]).toBe(want.topLogprobs.ids[at]);
            expect(Math.abs(got.topLogprobs![at]! - want.topLogprobs.logprobs[at]!)).toBeLessThan(1e-3);
          }
        }
      }
    }
  }));

  it('rejects a malformed batch with a clear error and keeps working', async () => {
    const h = harness({
      config: baseConfig(),
      activations: { ...logitsActivation(64) },
      ops: [{ op: 'sample', logits: 'logits' }],
      weights: {},
    }, { numPages: 4, pageSize: 1 });
    const bad = singleSequenceBatch(Int32Array.of(1, 2));
    bad.slotMapping = Int32Array.of(0, 99);
    await expect(h.model.forward(bad)).rejects.toThrow(/KV slot 99 is outside the cache/);
    const outOfVocab = singleSequenceBatch(Int32Array.of(1, 64));
    await expect(h.model.forward(outOfVocab)).rejects.toThrow(/token id 64 is outside the vocabulary/);
    h.write('logits', Float32Array.from({ length: 64 }, (_, i) => (i === 7 ? 5 : 0)));
    const ok = await h.model.forward(singleSequenceBatch(Int32Array.of(1, 2)));
    expect(Array.from(ok.tokens)).toEqual([7]);
  });
});

/**
 * S sequences: sequence s has `newTokens[s]` new tokens ending at KV length `kvLens[s]`, its
 * pages taken in order from `pageTable` (pagesPer[s] each; by default just enough). `only` picks
 * which sequences' page ranges to use (for a step over a subset).
 */
function multiSequenceBatch(
  newTokens: number[],
  kvLens: number[],
  pageSize: number,
  pageTable: Int32Array,
  pagesPer?: number[],
  only?: number[],
): ForwardBatch {
  const allPages = pagesPer ?? kvLens.map((n) => Math.ceil(n / pageSize));
  const firstPage: number[] = [];
  allPages.reduce((at, n, s) => ((firstPage[s] = at), at + n), 0);
  const seqs = only ?? newTokens.map((_, s) => s);
  const steps = seqs.map((seq, s) => {
    const n = only ? newTokens[s]! : newTokens[seq]!;
    const len = only ? kvLens[s]! : kvLens[seq]!;
    return { tokens: new Int32Array(n), cached: len - n, pages: pageTable.subarray(firstPage[seq]!, firstPage[seq]! + allPages[seq]!) };
  });
  return pagedBatch(steps, pageSize, greedySampling(seqs.length));
}

function randomPenalties(S: number, vocab: number): PenaltyBatch {
  const r = randomData(seed + S);
  const tokenStart = new Int32Array(S + 1);
  const ids: number[] = [];
  const counts: number[] = [];
  for (let s = 0; s < S; s++) {
    const seen = new Set<number>();
    const n = r.int(0, Math.min(30, vocab));
    while (seen.size < n) seen.add(r.int(0, vocab - 1));
    for (const id of seen) {
      ids.push(id);
      counts.push(r.pick([0, 1, 3]));
    }
    tokenStart[s + 1] = ids.length;
  }
  return {
    repetition: Float32Array.from({ length: S }, () => r.pick([1, 1.2, 0.8])),
    frequency: Float32Array.from({ length: S }, () => r.pick([0, 0.5])),
    presence: Float32Array.from({ length: S }, () => r.pick([0, 0.7, -0.3])),
    tokenStart,
    tokenIds: Int32Array.from(ids),
    outputCounts: Int32Array.from(counts),
  };
}
