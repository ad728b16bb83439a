import { add, rmsnorm, siluMul } from '../ref/ops.js';
import { nativeBlocks } from './native-blocks.js';

/** A step's batch as host attention reads it (the fields of ForwardBatch it needs, and the cache's shape). */
export interface HostAttentionBatch {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  /** Slots of the cache: each layer's K and V are [numKvHeads, numSlots, headDim]. */
  numSlots: number;
  queryStart: Int32Array;
  kvLens: Int32Array;
  pageTable: Int32Array;
  pageTableStart: Int32Array;
  slotMapping: Int32Array;
}

/**
 * The ops of a layer besides its linears, on the host (--cpu-gemm native): two implementations
 * side by side, the addon's (vectorized, on its thread pool) and TypeScript's (the ref backend's
 * arithmetic, for a process without the addon; also the addon's oracle in tests).
 */
export interface LayerKernels {
  readonly name: string;
  /** out = x / rms(x) * weight, row by row. */
  rmsNorm(x: Float32Array, weight: Float32Array, rows: number, cols: number, eps: number, out: Float32Array): void;
  /** x += residual, then out = rmsNorm(x). */
  addRmsNorm(x: Float32Array, residual: Float32Array, weight: Float32Array, rows: number, cols: number, eps: number, out: Float32Array): void;
  /** x += y over the first n values. */
  add(x: Float32Array, y: Float32Array, n: number): void;
  /** out = silu(gate) * up over the first n values. */
  siluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void;
  /** Rotary embedding in place on rows of heads * headDim; cos and sin: [rows, headDim / 2], each row's angles. */
  rope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;
  /** Writes k and v's rows into the caches at batch.slotMapping, then causal GQA attention of q over each sequence's positions into out. */
  attention(q: Float32Array, k: Float32Array, v: Float32Array, kCache: Float32Array, vCache: Float32Array, batch: HostAttentionBatch, out: Float32Array): void;
}

/** The addon's kernels (native/cpu/src/layer_ops.h, attention.h), on up to `threads` threads. */
export function nativeLayerKernels(threads: number): LayerKernels {
  const addon = nativeBlocks;
  if (!addon) throw new Error('nativeLayerKernels: the native/cpu addon is not loaded');
  return {
    name: `native/cpu layer ops (${threads} thread${threads === 1 ? '' : 's'})`,
    rmsNorm: (x, weight, rows, cols, eps, out) => addon.rmsNorm(x, rows, cols, weight, eps, out, threads),
    addRmsNorm: (x, residual, weight, rows, cols, eps, out) => addon.addRmsNorm(x, residual, rows, cols, weight, eps, out, threads),
    add: (x, y, n) => addon.addInPlace(x, y, n),
    siluMul: (gate, up, n, out) => addon.siluMul(gate, up, n, out, threads),
    rope: (x, rows, heads, headDim, cos, sin) => addon.rope(x, rows, heads, headDim, cos, sin, threads),
    attention: (q, k, v, kCache, vCache, batch, out) => addon.pagedAttention(q, k, v, kCache, vCache, batch, out, threads),
  };
}

/** The same ops in TypeScript, in f64 where the ref backend computes in f64. */
export const typescriptLayerKernels: LayerKernels = {
  name: 'TypeScript layer ops',
  rmsNorm: (x, weight, rows, cols, eps, out) => rmsnorm(x.subarray(0, rows * cols), weight.subarray(0, cols), rows, eps, out),
  addRmsNorm(x, residual, weight, rows, cols, eps, out) {
    add(x, residual, rows * cols);
    rmsnorm(x.subarray(0, rows * cols), weight.subarray(0, cols), rows, eps, out);
  },
  add,
  siluMul,
  rope(x, rows, heads, headDim, cos, sin) {
    const half = headDim / 2;
    for (let t = 0; t < rows; t++) {
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const c = cos[t * half + i]!;
          const s = sin[t * half + i]!;
          const a = x[base + i]!;
          const b = x[base + i + half]!;
          x[base + i] = a * c - b * s;
          x[base + i + half] = b * c + a * s;
        }
      }
    }
  },
  attention(q, k, v, kCache, vCache, batch, out) {
    const { numHeads, numKvHeads, headDim: d, numSlots, pageSize } = batch;
    batch.slotMapping.forEach((slot, t) => {
      for (let h = 0; h < numKvHeads; h++) {
        kCache.set(k.subarray((t * numKvHeads + h) * d, (t * numKvHeads + h + 1) * d), (h * numSlots + slot) * d);
        vCache.set(v.subarray((t * numKvHeads + h) * d, (t * numKvHeads + h + 1) * d), (h * numSlots + slot) * d);
      }
    });
    const group = numHeads / numKvHeads;
    const scale = 1 / Math.sqrt(d);
    for (let s = 0; s < batch.kvLens.length; s++) {
      const first = batch.queryStart[s]!;
      const count = batch.queryStart[s + 1]! - first;
      const kvLen = batch.kvLens[s]!;
      const slots = Int32Array.from({ length: kvLen }, (_, p) => batch.pageTable[batch.pageTableStart[s]! + Math.floor(p / pageSize)]! * pageSize + (p % pageSize));
      const weights = new Float64Array(kvLen);
      for (let j = 0; j < count; j++) {
        const keys = kvLen - count + j + 1;
        for (let head = 0; head < numHeads; head++) {
          const kvHead = Math.floor(head / group);
          const qAt = ((first + j) * numHeads + head) * d;
          let max = -Infinity;
          for (let p = 0; p < keys; p++) {
            const kAt = (kvHead * numSlots + slots[p]!) * d;
            let dot = 0;
            for (let i = 0; i < d; i++) dot += q[qAt + i]! * kCache[kAt + i]!;
            weights[p] = dot * scale;
            max = Math.max(max, weights[p]!);
          }
          let total = 0;
          for (let p = 0; p < keys; p++) total += weights[p] = Math.exp(weights[p]! - max);
          for (let i = 0; i < d; i++) {
            let acc = 0;
            for (let p = 0; p < keys; p++) acc += weights[p]! * vCache[(kvHead * numSlots + slots[p]!) * d + i]!;
            out[qAt + i] = acc / total;
          }
        }
      }
    }
  },
};
