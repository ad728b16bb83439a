import { parentPort } from 'node:worker_threads';
import type { WeightDType } from '../../src/model/config.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/model/dtype.js';
import { dummyValue } from '../../src/model/dummy-weights.js';
import { hash32 } from '../../src/model/hash32.js';
import type { DeviceWeightRecipe } from '../../src/model/weights.js';
import { ggmlBlockSize, quantizeRows, type GgmlBlockType } from './ggml-blocks.js';
import { widenRow } from './linear-weights.js';
import { nativeBlocks } from './native-blocks.js';

/** Rows [rowStart, rowEnd) of a matrix to quantize into shared output arrays. */
export interface BlockJob {
  type: GgmlBlockType;
  cols: number;
  rowStart: number;
  rowEnd: number;
  dtype: WeightDType;
  /** Dummy weights: each element generated from its recipe (as DummyWeights.read does), no bytes read. */
  recipe?: DeviceWeightRecipe;
  /** Otherwise the matrix's raw bytes. */
  raw?: SharedArrayBuffer;
  /** Codes of row 0 start at byte `codesOffset` of `codes`; its scales at byte `scalesOffset` of `scales`. */
  codes: SharedArrayBuffer;
  codesOffset: number;
  scales: SharedArrayBuffer;
  scalesOffset: number;
}

/** Quantizes one job's rows (in a worker, or inline when workers are unavailable). */
export function runBlockJob(job: BlockJob): void {
  const { cols, dtype } = job;
  const blocksPerRow = Math.ceil(cols / ggmlBlockSize);
  const out = { codes: new Uint8Array(job.codes, job.codesOffset), scales: new Float32Array(job.scales, job.scalesOffset) };
  if (nativeBlocks && job.recipe && (dtype === 'f32' || dtype === 'bf16')) {
    const { key, halfRange, offset } = job.recipe;
    const rows = job.rowEnd - job.rowStart;
    const codes = out.codes.subarray(job.rowStart * blocksPerRow * ggmlBlockSize, job.rowEnd * blocksPerRow * ggmlBlockSize);
    const scales = out.scales.subarray(job.rowStart * blocksPerRow, job.rowEnd * blocksPerRow);
    nativeBlocks.dummyRows(job.type, key, halfRange, offset, dtype, job.rowStart * cols, rows, cols, codes, scales);
    return;
  }
  const row = new Float32Array(cols);
  const raw = job.raw ? new Uint8Array(job.raw) : null;
  for (let r = job.rowStart; r < job.rowEnd; r++) {
    if (job.recipe) dummyRow(job.recipe, dtype, r * cols, row);
    else widenRow(raw!, dtype, r, cols, row);
    if (nativeBlocks) nativeBlocks.quantizeRows(job.type, row, 1, cols, out.codes.subarray(r * blocksPerRow * ggmlBlockSize), out.scales.subarray(r * blocksPerRow));
    else quantizeRows(job.type, row, 1, cols, out, r * blocksPerRow * ggmlBlockSize, r * blocksPerRow);
  }
}

/**
 * Makes this thread a BlockPool worker. Called by block-worker-entry.mjs only: this module is
 * also imported where parentPort belongs to someone else (a tensor-parallel rank's thread).
 */
export function serveBlockJobs(): void {
  parentPort!.on('message', (job: BlockJob) => {
    runBlockJob(job);
    parentPort!.postMessage('done');
  });
}

/**
 * Elements [base, base + row.length) of a dummy tensor, as DummyWeights.read stores them
 * (dummyValue rounded to the dtype), in a loop V8 keeps tight: the high word of the index is
 * hashed once per row, and bf16 rounding works on the f32 bits in place.
 */
export function dummyRow(recipe: DeviceWeightRecipe, dtype: WeightDType, base: number, row: Float32Array): void {
  const { key, halfRange, offset } = recipe;
  const n = row.length;
  if (dtype === 'f16' || Math.floor(base / 4294967296) !== Math.floor((base + n - 1) / 4294967296)) {
    const round = dtype === 'f16' ? (x: number) => f16ToF32(f32ToF16(x)) : dtype === 'bf16' ? (x: number) => bf16ToF32(f32ToBf16(x)) : Math.fround;
    for (let i = 0; i < n; i++) row[i] = round(dummyValue(key, base + i, halfRange, offset));
    return;
  }
  // dummyValue, unrolled: h = hash(hash(hash(lo) ^ hash(hi ^ golden)) + key), u = top 24 bits.
  const hiHash = hash32(Math.floor(base / 4294967296) ^ 0x9e3779b9);
  const lo0 = base >>> 0;
  for (let i = 0; i < n; i++) {
    const h = hash32((hash32((hash32((lo0 + i) >>> 0) ^ hiHash) >>> 0) + key) >>> 0);
    row[i] = offset + (2 * ((h >>> 8) * (1 / 16777216)) - 1) * halfRange;
  }
  if (dtype === 'bf16') {
    // Round-to-nearest-even to bf16 on the bits, as f32ToBf16 does (dummy values are never NaN).
    const bits = new Uint32Array(row.buffer, row.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const b = bits[i]!;
      bits[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16;
    }
  }
}
