import type { WeightDType } from '../../src/model/config.js';
import { bytesPerElement, toFloat32 } from '../../src/model/dtype.js';
import { ggmlBlockSize, zeroCode, type GgmlBlockType, type QuantizedBlocks } from './ggml-blocks.js';

/**
 * The embedding table as the cpu backend holds it: raw for f32, else in the weight format's blocks
 * (shared with a tied lm-head, as in a GGUF file). On a tensor-parallel rank, rows
 * [vocabStart, vocabStart + rows) of it.
 */
export type EmbeddingTable = { out: string; vocabStart: number; rows: number } & ({ table: Uint8Array; dtype: WeightDType } | { blocks: QuantizedBlocks; type: GgmlBlockType });

/** The table's rows for the ids; on a tensor-parallel rank, zeros for ids outside its slice (an all-reduce completes them). */
export function embedRows(embedding: EmbeddingTable, tokenIds: Int32Array, out: Float32Array): Float32Array {
  const h = out.length / tokenIds.length;
  const { vocabStart, rows } = embedding;
  if ('blocks' in embedding) {
    const { blocks, type } = embedding;
    const zero = zeroCode[type];
    const blocksPerRow = Math.ceil(h / ggmlBlockSize);
    tokenIds.forEach((id, t) => {
      const row = id - vocabStart;
      if (row < 0 || row >= rows) return out.fill(0, t * h, (t + 1) * h);
      const codes = row * blocksPerRow * ggmlBlockSize;
      const scales = row * blocksPerRow;
      for (let i = 0; i < h; i++) out[t * h + i] = (blocks.codes[codes + i]! - zero) * blocks.scales[scales + (i >> 5)]!;
    });
    return out;
  }
  const { table, dtype } = embedding;
  const rowBytes = h * bytesPerElement[dtype];
  tokenIds.forEach((id, t) => {
    const row = id - vocabStart;
    if (row < 0 || row >= rows) out.fill(0, t * h, (t + 1) * h);
    else out.set(toFloat32(table.subarray(row * rowBytes, (row + 1) * rowBytes), dtype), t * h);
  });
  return out;
}
