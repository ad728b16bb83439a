import type { KvCacheDtype } from '../../src/engine/backend.js';
import { BackendError } from '../../src/errors.js';
import { encodeFp8 } from './fp8-codes.js';
import { quantizeRows } from './ggml-blocks.js';
import { kvBlockSize, type KvCacheFormat } from './segment-graph.js';

/** One layer's K or V: f32 values, 8-bit codes (q4_0: two 4-bit codes a byte), and for q8_0 and q4_0 one scale per block. */
export interface LayerCache {
  values: Float32Array | Uint8Array | Int8Array;
  scales: Float32Array | null;
}

/** --kv-cache-dtype as the cpu backend stores it: `auto` is f32; vLLM's `fp8` means E4M3. */
export function kvCacheFormat(dtype: KvCacheDtype | undefined): KvCacheFormat {
  if (dtype === undefined || dtype === 'auto') return 'f32';
  if (dtype === 'fp8') return 'fp8_e4m3';
  if (dtype === 'fp8_e4m3' || dtype === 'fp8_e5m2' || dtype === 'q8_0' || dtype === 'q4_0') return dtype;
  throw new BackendError('cpu', `--kv-cache-dtype ${String(dtype)}: not supported (choose auto, fp8, fp8_e4m3, fp8_e5m2, q8_0 or q4_0)`);
}

/** An empty layer cache of `size` values ([kvHeads, slots, headDim]) in the format. */
export function emptyLayerCache(format: KvCacheFormat, size: number, headDim: number): LayerCache {
  if (format === 'f32') return { values: new Float32Array(size), scales: null };
  if (format === 'q8_0') return { values: new Int8Array(size), scales: new Float32Array(size / kvBlockSize(headDim)) };
  if (format === 'q4_0') return { values: new Uint8Array(size / 2), scales: new Float32Array(size / kvBlockSize(headDim)) };
  return { values: new Uint8Array(size), scales: null };
}

/** rows [T, kvHeads * headDim] into the cache's [kvHeads, slots, headDim] layout (as codes for an 8-bit cache). */
export function writeKvRows(format: KvCacheFormat, cache: LayerCache, rows: Float32Array, slotMapping: Int32Array, layout: { numKvHeads: number; headDim: number; numSlots: number }): void {
  const { numKvHeads, headDim, numSlots } = layout;
  const { values, scales } = cache;
  const block = kvBlockSize(headDim);
  // q8_0 / q4_0: ggml's rules (ggml-blocks.ts), q8_0's codes stored signed, q4_0's two a byte;
  // a head shorter than 32 is one block (quantizeRows pads it to 32 with zero codes).
  const q = { codes: new Uint8Array(Math.ceil(headDim / 32) * 32), scales: new Float32Array(Math.ceil(headDim / 32)) };
  const half = block / 2;
  slotMapping.forEach((slot, t) => {
    for (let h = 0; h < numKvHeads; h++) {
      const from = (t * numKvHeads + h) * headDim;
      const at = (h * numSlots + slot) * headDim;
      const row = rows.subarray(from, from + headDim);
      if (values instanceof Float32Array) values.set(row, at);
      else if (format === 'q8_0') {
        quantizeRows('q8_0', row, 1, headDim, q);
        for (let i = 0; i < headDim; i++) values[at + i] = q.codes[i]! - 128;
        scales!.set(q.scales.subarray(0, headDim / block), at / block);
      } else if (format === 'q4_0') {
        quantizeRows('q4_0', row, 1, headDim, q);
        for (let i = 0; i < headDim; i += block) {
          for (let j = 0; j < half; j++) values[(at + i) / 2 + j] = q.codes[i + j]! | (q.codes[i + j + half]! << 4);
        }
        scales!.set(q.scales.subarray(0, headDim / block), at / block);
      } else if (format === 'fp8_e4m3' || format === 'fp8_e5m2') encodeFp8(format, row, (values as Uint8Array).subarray(at, at + headDim));
    }
  });
}
