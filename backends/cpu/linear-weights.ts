import type { WeightDType } from '../../src/model/config.js';
import { bytesPerElement, toFloat32 } from '../../src/model/dtype.js';
import { DataType, type OnnxGraphBuilder } from './onnx-builder.js';

/**
 * How the CPU backend stores a projection matrix:
 * - `f32`: exact; ORT Gemm with the weight prepacked (4 bytes per weight).
 * - `q8`: 8-bit blocks of 32 with one f32 scale each (like GGUF Q8_0, ~1.1 bytes per weight),
 *   run by the com.microsoft MatMulNBits kernel. Decode on a CPU is bound by memory bandwidth,
 *   so this is what makes BF16/F16 checkpoints fast, and it keeps an 8B model well under 24 GiB.
 */
export type WeightFormat = 'f32' | 'q8';

export const q8BlockSize = 32;

/** A matrix in Hugging Face layout [rows = outFeatures, cols = inFeatures], raw bytes of `dtype`. */
export interface RawMatrix {
  bytes: Uint8Array;
  dtype: WeightDType;
  rows: number;
  cols: number;
}

/** Stacks matrices with the same inFeatures along outFeatures (q/k/v or gate/up into one GEMM). */
export function stackRows(parts: RawMatrix[]): RawMatrix {
  const { dtype, cols } = parts[0]!;
  if (parts.some((p) => p.dtype !== dtype || p.cols !== cols)) throw new Error('stackRows: parts differ in dtype or columns');
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.bytes.byteLength, 0));
  let offset = 0;
  for (const p of parts) {
    bytes.set(p.bytes, offset);
    offset += p.bytes.byteLength;
  }
  return { bytes, dtype, rows: parts.reduce((n, p) => n + p.rows, 0), cols };
}

/** Bytes the backend holds for a matrix of this shape in this format. */
export function storedBytes(rows: number, cols: number, format: WeightFormat): number {
  if (format === 'f32') return rows * cols * 4;
  const blocks = Math.ceil(cols / q8BlockSize);
  return rows * blocks * (q8BlockSize + 4);
}

/** Quantizes each row in blocks of 32: value = (q - 128) * scale, scale = max|x| / 127. */
export function quantizeQ8(m: RawMatrix): { blocks: Uint8Array; scales: Float32Array } {
  const blocksPerRow = Math.ceil(m.cols / q8BlockSize);
  const blocks = new Uint8Array(m.rows * blocksPerRow * q8BlockSize).fill(128);
  const scales = new Float32Array(m.rows * blocksPerRow);
  const rowBytes = m.cols * bytesPerElement[m.dtype];
  const row = new Float32Array(m.cols);
  const rowBits = new Uint32Array(row.buffer);
  // bf16 rows are widened in place (a shift), the other dtypes through the shared decoder.
  const bf16 = m.dtype === 'bf16' ? new Uint16Array(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength / 2) : null;
  for (let r = 0; r < m.rows; r++) {
    if (bf16) for (let i = 0, o = r * m.cols; i < m.cols; i++) rowBits[i] = bf16[o + i]! << 16;
    else row.set(toFloat32(m.bytes.subarray(r * rowBytes, (r + 1) * rowBytes), m.dtype));
    for (let b = 0; b < blocksPerRow; b++) {
      const start = b * q8BlockSize;
      const end = Math.min(start + q8BlockSize, m.cols);
      let maxAbs = 0;
      for (let i = start; i < end; i++) {
        const a = row[i]! < 0 ? -row[i]! : row[i]!;
        if (a > maxAbs) maxAbs = a;
      }
      const scale = maxAbs / 127;
      scales[r * blocksPerRow + b] = scale;
      if (scale === 0) continue;
      const inverse = 1 / scale;
      const out = (r * blocksPerRow + b) * q8BlockSize - start;
      for (let i = start; i < end; i++) blocks[out + i] = Math.round(row[i]! * inverse) + 128;
    }
  }
  return { blocks, scales };
}

/** Adds `x @ m^T` to the graph as an initializer plus one node; returns the output name. */
export function addLinear(b: OnnxGraphBuilder, x: string, m: RawMatrix, format: WeightFormat, name: string): string {
  if (format === 'f32') {
    const w = b.initializer(name, DataType.FLOAT, [m.rows, m.cols], toFloat32(m.bytes, m.dtype));
    return b.op('Gemm', [x, w], { transB: 1 });
  }
  const { blocks, scales } = quantizeQ8(m);
  const blocksPerRow = Math.ceil(m.cols / q8BlockSize);
  const w = b.initializer(name, DataType.UINT8, [m.rows, blocksPerRow, q8BlockSize], blocks);
  const s = b.initializer(`${name}.scales`, DataType.FLOAT, [m.rows * blocksPerRow], scales);
  // accuracy_level 4: int8 activations too (the fast AVX2 integer path; level 0 is a slow fallback for 8 bits).
  return b.op(
    'MatMulNBits',
    [x, w, s],
    { K: m.cols, N: m.rows, bits: 8, block_size: q8BlockSize, accuracy_level: 4 },
    'com.microsoft',
  );
}
