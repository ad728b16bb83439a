/**
 * The graph's ops in plain TypeScript over Float32Arrays, written for clarity. Other backends'
 * op-level parity tests call these as the oracle.
 */

export function embedding(table: Float32Array, cols: number, tokenIds: Int32Array, out: Float32Array): void {
  for (let t = 0; t < tokenIds.length; t++) {
    const id = tokenIds[t]!;
    out.set(table.subarray(id * cols, (id + 1) * cols), t * cols);
  }
}

/** A tensor-parallel rank's rows [vocabStart, vocabStart + rows) of the table; zeros for ids outside them. */
export function embeddingSlice(table: Float32Array, cols: number, vocabStart: number, tokenIds: Int32Array, out: Float32Array): void {
  const rows = table.length / cols;
  for (let t = 0; t < tokenIds.length; t++) {
    const row = tokenIds[t]! - vocabStart;
    if (row >= 0 && row < rows) out.set(table.subarray(row * cols, (row + 1) * cols), t * cols);
    else out.fill(0, t * cols, (t + 1) * cols);
  }
}

export function rmsnorm(x: Float32Array, weight: Float32Array, rows: number, eps: number, out: Float32Array): void {
  const cols = weight.length;
  for (let r = 0; r < rows; r++) {
    let sumSquares = 0;
    for (let c = 0; c < cols; c++) sumSquares += x[r * cols + c]! ** 2;
    const scale = 1 / Math.sqrt(sumSquares / cols + eps);
    for (let c = 0; c < cols; c++) out[r * cols + c] = x[r * cols + c]! * scale * weight[c]!;
  }
}

export function add(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i] = x[i]! + y[i]!;
}

/** out[r, o] = sum_i x[r, i] * weight[o, i]: weight in HF layout [outFeatures, inFeatures]. */
export function linear(x: Float32Array, weight: Float32Array, rows: number, inFeatures: number, out: Float32Array): void {
  const outFeatures = weight.length / inFeatures;
  for (let r = 0; r < rows; r++) {
    const xr = x.subarray(r * inFeatures, (r + 1) * inFeatures);
    for (let o = 0; o < outFeatures; o++) {
      let sum = 0;
      const base = o * inFeatures;
      for (let i = 0; i < inFeatures; i++) sum += xr[i]! * weight[base + i]!;
      out[r * outFeatures + o] = sum;
    }
  }
}

/** Rotates each head of each row in place: pairs (i, i + headDim/2) by angle position * invFreq[i]. */
export function rope(x: Float32Array, positions: Int32Array, numHeads: number, headDim: number, invFreq: Float64Array): void {
  const half = headDim / 2;
  for (let t = 0; t < positions.length; t++) {
    for (let h = 0; h < numHeads; h++) {
      const base = (t * numHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = positions[t]! * invFreq[i]!;
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        x[base + i] = a * cos - b * sin;
        x[base + i + half] = b * cos + a * sin;
      }
    }
  }
}

export function siluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}

export interface AttentionLayout {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  queryStart: Int32Array;
  kvLens: Int32Array;
  pageTable: Int32Array;
  pageTableStart: Int32Array;
  slotMapping: Int32Array;
}

export function kvSlot(layout: AttentionLayout, s: number, position: number): number {
  const page = layout.pageTable[layout.pageTableStart[s]! + Math.floor(position / layout.pageSize)]!;
  return page * layout.pageSize + (position % layout.pageSize);
}

/**
 * Writes the step's K and V rows into the cache (rows of numKvHeads * headDim per slot), then
 * causal grouped-query attention: token j of sequence s (at position kvLens[s] - n + j, n its
 * new tokens) attends over positions 0..that position.
 */
export function pagedAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  layout: AttentionLayout,
  out: Float32Array,
): void {
  const { numHeads, numKvHeads, headDim } = layout;
  const kvCols = numKvHeads * headDim;
  for (let t = 0; t < layout.slotMapping.length; t++) {
    const slot = layout.slotMapping[t]!;
    kCache.set(k.subarray(t * kvCols, (t + 1) * kvCols), slot * kvCols);
    vCache.set(v.subarray(t * kvCols, (t + 1) * kvCols), slot * kvCols);
  }
  const group = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  const numSeqs = layout.kvLens.length;
  for (let s = 0; s < numSeqs; s++) {
    const first = layout.queryStart[s]!;
    const count = layout.queryStart[s + 1]! - first;
    const kvLen = layout.kvLens[s]!;
    const slots = Int32Array.from({ length: kvLen }, (_, p) => kvSlot(layout, s, p));
    const scores = new Float64Array(kvLen);
    for (let j = 0; j < count; j++) {
      const t = first + j;
      const lastPosition = kvLen - count + j;
      for (let h = 0; h < numHeads; h++) {
        const kvHead = Math.floor(h / group);
        const qBase = (t * numHeads + h) * headDim;
        let max = -Infinity;
        for (let p = 0; p <= lastPosition; p++) {
          const kBase = slots[p]! * kvCols + kvHead * headDim;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[qBase + d]! * kCache[kBase + d]!;
          scores[p] = dot * scale;
          if (scores[p]! > max) max = scores[p]!;
        }
        let sum = 0;
        for (let p = 0; p <= lastPosition; p++) {
          scores[p] = Math.exp(scores[p]! - max);
          sum += scores[p]!;
        }
        const oBase = (t * numHeads + h) * headDim;
        for (let d = 0; d < headDim; d++) {
          let acc = 0;
          for (let p = 0; p <= lastPosition; p++) acc += scores[p]! * vCache[slots[p]! * kvCols + kvHead * headDim + d]!;
          out[oBase + d] = acc / sum;
        }
      }
    }
  }
}

export function gatherLast(x: Float32Array, cols: number, queryStart: Int32Array, out: Float32Array): void {
  for (let s = 0; s + 1 < queryStart.length; s++) {
    const t = queryStart[s + 1]! - 1;
    out.set(x.subarray(t * cols, (t + 1) * cols), s * cols);
  }
}
