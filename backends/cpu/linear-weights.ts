import type { WeightDType } from '../../src/model/config.js';
import { bytesPerElement, toFloat32 } from '../../src/model/dtype.js';
import { ggmlBlockSize, quantizeRows, type GgmlBlockType, type QuantizedBlocks } from './ggml-blocks.js';
import { DataType, type OnnxGraphBuilder } from './onnx-builder.js';

/**
 * How the CPU backend stores a projection matrix:
 * - `f32`: exact; ORT Gemm with the weight prepacked (4 bytes per weight).
 * - `q8`: GGUF Q8_0's blocks (32 int8 codes and one f16-valued scale, ~1.1 bytes per weight);
 * - `q4`: GGUF Q4_0's blocks (32 4-bit codes around 8 and one scale, ~0.6 bytes per weight);
 *   both run by the com.microsoft MatMulNBits kernel with int8 activations. Decode on a CPU is
 *   bound by memory bandwidth, so this is what makes BF16/F16 checkpoints fast, and it keeps an
 *   8B model well under 24 GiB. The blocks are quantized with ggml's rules (ggml-blocks.ts), so
 *   they equal those of a GGUF file of the same weights.
 */
export type WeightFormat = 'f32' | 'q8' | 'q4';

const blockType: Record<Exclude<WeightFormat, 'f32'>, GgmlBlockType> = { q8: 'q8_0', q4: 'q4_0' };
const bitsOf: Record<Exclude<WeightFormat, 'f32'>, number> = { q8: 8, q4: 4 };

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
  const blocks = Math.ceil(cols / ggmlBlockSize);
  // q8 also holds one zero-point byte per block (see addBlocksLinear).
  return rows * blocks * ((format === 'q8' ? 1 : 0) + (ggmlBlockSize * bitsOf[format]) / 8 + 4);
}

/** Quantizes each row in ggml blocks of 32 (Q8_0 or Q4_0 rules), widening one row at a time. */
export function quantizeMatrix(m: RawMatrix, type: GgmlBlockType): QuantizedBlocks {
  const blocksPerRow = Math.ceil(m.cols / ggmlBlockSize);
  const out: QuantizedBlocks = { codes: new Uint8Array(m.rows * blocksPerRow * ggmlBlockSize), scales: new Float32Array(m.rows * blocksPerRow) };
  const row = new Float32Array(m.cols);
  for (let r = 0; r < m.rows; r++) {
    widenRow(m.bytes, m.dtype, r, m.cols, row);
    quantizeRows(type, row, 1, m.cols, out, r * blocksPerRow * ggmlBlockSize, r * blocksPerRow);
  }
  return out;
}

/** Row `r` of a raw matrix as f32 into `row`: bf16 by a shift, the other dtypes through the shared decoder. */
export function widenRow(bytes: Uint8Array, dtype: WeightDType, r: number, cols: number, row: Float32Array): void {
  if (dtype === 'bf16' && bytes.byteOffset % 2 === 0) {
    const bf16 = new Uint16Array(bytes.buffer, bytes.byteOffset + r * cols * 2, cols);
    const bits = new Uint32Array(row.buffer, row.byteOffset, cols);
    for (let i = 0; i < cols; i++) bits[i] = bf16[i]! << 16;
    return;
  }
  const rowBytes = cols * bytesPerElement[dtype];
  row.set(toFloat32(bytes.subarray(r * rowBytes, (r + 1) * rowBytes), dtype));
}

/** MatMulNBits' B layout: 8-bit codes as they are, 4-bit codes two to a byte (low nibble first). */
export function packCodes(codes: Uint8Array, bits: number): Uint8Array {
  if (bits === 8) return codes;
  const packed = new Uint8Array(codes.length / 2);
  for (let i = 0; i < packed.length; i++) packed[i] = codes[2 * i]! | (codes[2 * i + 1]! << 4);
  return packed;
}

/** Adds `x @ m^T` to the graph as an initializer plus one node; returns the output name. */
export function addLinear(b: OnnxGraphBuilder, x: string, m: RawMatrix, format: WeightFormat, name: string): string {
  if (format === 'f32') {
    const w = b.initializer(name, DataType.FLOAT, [m.rows, m.cols], toFloat32(m.bytes, m.dtype));
    return b.node('Gemm', [x, w], { transB: 1 }, [`${name}.matmul`])[0]!;
  }
  return addBlocksLinear(b, x, quantizeMatrix(m, blockTypeOf(format)), m.rows, m.cols, format, name);
}

/** The ggml block type of a quantized format. */
export function blockTypeOf(format: Exclude<WeightFormat, 'f32'>): GgmlBlockType {
  return blockType[format];
}

/** Adds `x @ m^T` for a matrix already quantized (a tied lm-head shares the embedding's blocks). */
export function addBlocksLinear(
  b: OnnxGraphBuilder,
  x: string,
  blocks: QuantizedBlocks,
  rows: number,
  cols: number,
  format: Exclude<WeightFormat, 'f32'>,
  name: string,
): string {
  const m = { rows, cols };
  const bits = bitsOf[format];
  const { codes, scales } = blocks;
  const blocksPerRow = Math.ceil(m.cols / ggmlBlockSize);
  const w = b.initializer(name, DataType.UINT8, [m.rows, blocksPerRow, (ggmlBlockSize * bits) / 8], packCodes(codes, bits));
  const s = b.initializer(`${name}.scales`, DataType.FLOAT, [m.rows * blocksPerRow], scales);
  // Zero points: MatMulNBits' default (128 for 8 bits, 8 for 4) is the zero code of Q8_0 and Q4_0, but
  // ORT 1.30's 8-bit kernel ran 1.3-1.5x faster on AVX2 with them given explicitly (same results, bit
  // for bit; docs/performance.md); the 4-bit kernel ran slower with them, so q4 leaves them out.
  // accuracy_level 4: int8 activations too (the fast AVX2 integer path; level 0 is a slow fallback for 8 bits).
  const inputs = [x, w, s];
  if (bits === 8) inputs.push(b.initializer(`${name}.zero_points`, DataType.UINT8, [m.rows * blocksPerRow], q8ZeroPoints(m.rows * blocksPerRow)));
  const attributes = { K: m.cols, N: m.rows, bits, block_size: ggmlBlockSize, accuracy_level: 4 };
  return b.node('MatMulNBits', inputs, attributes, [`${name}.matmul`], 'com.microsoft')[0]!;
}

/**
 * Q8_0's zero points, all 128: every matrix reads a prefix of one buffer (ORT copies what it
 * reads), instead of each load leaving a fresh one per matrix for the garbage collector. It
 * grows to the largest matrix's block count (16 MB for an 8B model's lm-head) and is kept.
 */
let zeroPoints = new Uint8Array(0);
function q8ZeroPoints(count: number): Uint8Array {
  if (zeroPoints.length < count) zeroPoints = new Uint8Array(count).fill(128);
  return zeroPoints.subarray(0, count);
}
