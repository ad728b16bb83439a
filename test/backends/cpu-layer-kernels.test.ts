import { describe, expect, it } from 'vitest';
import { nativeLayerKernels, typescriptLayerKernels, type HostAttentionBatch, type LayerKernels } from '../../backends/cpu/layer-kernels.js';
import { nativeBlocks } from '../../backends/cpu/native-blocks.js';
import { pagedAttention } from '../../backends/ref/ops.js';
import { greedySampling, pagedBatch, type SequenceStep } from '../support/paged-batch.js';
import { randomData } from '../support/random-data.js';

// The host ops of --cpu-gemm native besides the linears: the TypeScript kernels against the ref
// backend's attention, and the addon's kernels against the TypeScript ones.

interface Shape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

/** Three sequences on shuffled pages of 4: a decode token after 37 cached, a 40-token chunk after 5, a fresh 3-token prompt. */
function attentionCase(shape: Shape, seed: number) {
  const pageSize = 4;
  const numPages = 40;
  const r = randomData(seed);
  const order = Array.from({ length: numPages }, (_, i) => i).sort(() => r.next() - 0.5);
  const steps: SequenceStep[] = [
    { tokens: [1], cached: 37, pages: order.slice(0, 10) },
    { tokens: Array.from({ length: 40 }, (_, i) => i), cached: 5, pages: order.slice(10, 22) },
    { tokens: [4, 5, 6], cached: 0, pages: order.slice(22, 23) },
  ];
  const forward = pagedBatch(steps, pageSize, greedySampling(steps.length));
  const numSlots = numPages * pageSize;
  const tokens = forward.tokenIds.length;
  const kvCols = shape.numKvHeads * shape.headDim;
  const batch: HostAttentionBatch = { ...shape, pageSize, numSlots, ...forward };
  return {
    batch,
    q: r.normal(tokens * shape.numHeads * shape.headDim),
    k: r.normal(tokens * kvCols),
    v: r.normal(tokens * kvCols),
    // Cached positions hold earlier K and V; so do the slots no sequence uses.
    kCache: r.normal(numSlots * kvCols),
    vCache: r.normal(numSlots * kvCols),
  };
}

/** The kernels' attention on copies of the case's caches: its output and the caches after. */
function attend(kernels: LayerKernels, c: ReturnType<typeof attentionCase>) {
  const kCache = c.kCache.slice();
  const vCache = c.vCache.slice();
  const out = new Float32Array(c.q.length).fill(NaN);
  kernels.attention(c.q, c.k, c.v, kCache, vCache, c.batch, out);
  return { out, kCache, vCache };
}

/** [kvHeads, slots, headDim] into the ref backend's [slots, kvHeads * headDim]. */
function slotMajor(cache: Float32Array, { numKvHeads, headDim }: Shape, numSlots: number): Float32Array {
  const out = new Float32Array(cache.length);
  for (let h = 0; h < numKvHeads; h++) {
    for (let s = 0; s < numSlots; s++) out.set(cache.subarray((h * numSlots + s) * headDim, (h * numSlots + s + 1) * headDim), (s * numKvHeads + h) * headDim);
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

const shapes: Shape[] = [
  { numHeads: 8, numKvHeads: 2, headDim: 64 },
  { numHeads: 6, numKvHeads: 2, headDim: 24 },
  { numHeads: 2, numKvHeads: 2, headDim: 16 },
];

describe('TypeScript layer kernels', () => {
  it.each(shapes)('attend as the ref backend does over its slot-major cache (%o)', (shape) => {
    const c = attentionCase(shape, 5);
    const got = attend(typescriptLayerKernels, c);
    const kRef = slotMajor(c.kCache, shape, c.batch.numSlots);
    const vRef = slotMajor(c.vCache, shape, c.batch.numSlots);
    const want = new Float32Array(c.q.length);
    pagedAttention(c.q, c.k, c.v, kRef, vRef, c.batch, want);
    expect(maxAbsDiff(got.out, want)).toBeLessThan(1e-6);
    expect(slotMajor(got.kCache, shape, c.batch.numSlots)).toEqual(kRef);
    expect(slotMajor(got.vCache, shape, c.batch.numSlots)).toEqual(vRef);
  });
});

describe.skipIf(!nativeBlocks)("the addon's layer kernels against the TypeScript ones", () => {
  const ts = typescriptLayerKernels;
  for (const threads of [1, 3]) {
    const native = nativeBlocks ? nativeLayerKernels(threads) : ts;

    it.each(shapes)(`attend alike, and write the same cache slots (${threads} threads, %o)`, (shape) => {
      const c = attentionCase(shape, 11 + threads);
      const got = attend(native, c);
      const want = attend(ts, c);
      expect(got.kCache).toEqual(want.kCache);
      expect(got.vCache).toEqual(want.vCache);
      expect(maxAbsDiff(got.out, want.out)).toBeLessThan(2e-6);
    });

    it(`compute norms, residual adds, SiLU and rotary alike (${threads} threads)`, () => {
      const r = randomData(3);
      for (const [rows, cols] of [[1, 2048], [37, 100], [300, 64]] as const) {
        const x = r.normal(rows * cols, 3);
        const residual = r.normal(rows * cols);
        const weight = r.uniform(cols, 2);
        const norm = (k: LayerKernels) => {
          const out = new Float32Array(rows * cols);
          k.rmsNorm(x, weight, rows, cols, 1e-5, out);
          return out;
        };
        expect(maxAbsDiff(norm(native), norm(ts))).toBeLessThan(1e-5);
        const addNorm = (k: LayerKernels) => {
          const sum = x.slice();
          const out = new Float32Array(rows * cols);
          k.addRmsNorm(sum, residual, weight, rows, cols, 1e-5, out);
          return { sum, out };
        };
        const [a, b] = [addNorm(native), addNorm(ts)];
        expect(a.sum).toEqual(b.sum);
        expect(maxAbsDiff(a.out, b.out)).toBeLessThan(1e-5);
      }
      // SiLU across the range where e^-x over- and underflows in f32.
      const n = 40_000;
      const gate = Float32Array.from({ length: n }, (_, i) => -120 + (240 * i) / n);
      const up = r.uniform(n, 2);
      const [s1, s2] = [new Float32Array(n), new Float32Array(n)];
      native.siluMul(gate, up, n, s1);
      ts.siluMul(gate, up, n, s2);
      let worst = 0;
      for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(s1[i]! - s2[i]!) / Math.max(1, Math.abs(s2[i]!)));
      expect(worst).toBeLessThan(2e-6);
      const [rows, heads, headDim] = [70, 4, 24];
      const q = r.normal(rows * heads * headDim);
      const cos = r.uniform((rows * headDim) / 2);
      const sin = r.uniform((rows * headDim) / 2);
      const [q1, q2] = [q.slice(), q.slice()];
      native.rope(q1, rows, heads, headDim, cos, sin);
      ts.rope(q2, rows, heads, headDim, cos, sin);
      expect(maxAbsDiff(q1, q2)).toBeLessThan(1e-6);
    });
  }

  it('refuses a batch that names slots or pages outside the cache, or counts that do not add up', () => {
    const native = nativeLayerKernels(2);
    const shape = shapes[0]!;
    const c = attentionCase(shape, 1);
    const out = new Float32Array(c.q.length);
    const run = (batch: Partial<HostAttentionBatch>) => () => native.attention(c.q, c.k, c.v, c.kCache, c.vCache, { ...c.batch, ...batch }, out);
    expect(run({ slotMapping: c.batch.slotMapping.map((s, i) => (i === 3 ? c.batch.numSlots : s)) })).toThrow(/slot 160 lies outside the cache/);
    expect(run({ pageTable: c.batch.pageTable.map((p, i) => (i === 0 ? 40 : p)) })).toThrow(/page 40 lies outside the cache/);
    expect(run({ kvLens: Int32Array.of(38, 45, 2) })).toThrow(/sequence 2 has fewer cached positions than new tokens/);
    expect(run({ queryStart: Int32Array.of(0, 1, 41) })).toThrow(/queryStart/);
    expect(run({ numHeads: 7 })).toThrow(/multiple of numKvHeads/);
    expect(() => native.attention(c.q, c.k, c.v, c.kCache.subarray(1), c.vCache, c.batch, out)).toThrow(/kCache is too short/);
  });
});
