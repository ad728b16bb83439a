import { f16ToF32, f32ToF16 } from '../../src/model/dtype.js';

/**
 * GGML's Q8_0 and Q4_0 block quantization (blocks of 32 along a row, one f16 scale each), with
 * ggml's own rounding rules, so the CPU backend's 8-bit and 4-bit weights are the very blocks a
 * GGUF file of the same weights holds (the benchmark's llama.cpp peer and the parity tests rely
 * on it):
 * - Q8_0: d = max|x| / 127, q = round(x / d) in [-127, 127]; value = q * d.
 * - Q4_0: d = m / -8 where m is the element of largest magnitude (sign kept),
 *   q = min(15, trunc(x / d + 8.5)) in [0, 15]; value = (q - 8) * d.
 * The scale kept is d rounded to f16 (what the file stores); codes are computed with the
 * unrounded d in f32 arithmetic (Math.fround), as ggml's C code does, so no code is off by one.
 */
export type GgmlBlockType = 'q8_0' | 'q4_0';

export const ggmlBlockSize = 32;

/** Bytes of one block in a GGUF file: an f16 scale and the codes. */
export const ggmlBlockBytes: Record<GgmlBlockType, number> = { q8_0: 34, q4_0: 18 };

/** The codes of one block, as unsigned numbers: Q8_0 as q + 128 (0..255), Q4_0 as q (0..15). */
export interface QuantizedBlocks {
  /** One code per element, row-major, padded with the zero code to whole blocks. */
  codes: Uint8Array;
  /** One f16-representable scale per block. */
  scales: Float32Array;
}

/** The code that stands for 0 (MatMulNBits' default zero point for 8 and 4 bits). */
export const zeroCode: Record<GgmlBlockType, number> = { q8_0: 128, q4_0: 8 };

const fround = Math.fround;
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * x (an f32 value) rounded to the nearest f16 value, ties to even. In f16's normal range that
 * is rounding the f32 mantissa to 10 bits, done on the bits (this runs once per block of every
 * weight at load); subnormals, overflow and NaN take the exact conversion.
 */
function roundToF16(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0]!;
  const exp = (bits >>> 23) & 0xff;
  if (exp < 113 || exp > 141) return f16ToF32(f32ToF16(x));
  u32Scratch[0] = (bits + 0xfff + ((bits >>> 13) & 1)) & 0xffffe000;
  return f32Scratch[0]!;
}

/**
 * Quantizes `rows` rows of `cols` f32 values (`values` holds rows [0, rows)). `out` receives
 * codes at `codesOffset` and scales at `scalesOffset` (in elements), so callers can fill one
 * large array a block of rows at a time.
 */
export function quantizeRows(
  type: GgmlBlockType,
  values: Float32Array,
  rows: number,
  cols: number,
  out: QuantizedBlocks,
  codesOffset = 0,
  scalesOffset = 0,
): void {
  const blocksPerRow = Math.ceil(cols / ggmlBlockSize);
  for (let r = 0; r < rows; r++) {
    const codesAt = codesOffset + r * blocksPerRow * ggmlBlockSize;
    const scalesAt = scalesOffset + r * blocksPerRow;
    if (type === 'q8_0') quantizeRowQ8(values, r * cols, cols, out.codes, codesAt, out.scales, scalesAt);
    else quantizeRowQ4(values, r * cols, cols, out.codes, codesAt, out.scales, scalesAt);
  }
}

// The two row loops below run over every weight of a model at load: they are kept monomorphic
// and free of builtin calls per block (a fill per block of 32 cost more than the block itself),
// and round with `| 0` on x +/- 0.5, which is C's roundf (away from zero) for these magnitudes.

function quantizeRowQ8(values: Float32Array, from: number, cols: number, codes: Uint8Array, codesAt: number, scales: Float32Array, scalesAt: number): void {
  const blocks = Math.ceil(cols / ggmlBlockSize);
  for (let b = 0; b < blocks; b++) {
    const start = from + b * ggmlBlockSize;
    const end = from + Math.min((b + 1) * ggmlBlockSize, cols);
    let maxAbs = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(values[i]!);
      if (a > maxAbs) maxAbs = a;
    }
    const d = fround(maxAbs / 127);
    const inverse = d === 0 ? 0 : fround(1 / d);
    scales[scalesAt + b] = roundToF16(d);
    let o = codesAt + b * ggmlBlockSize;
    for (let i = start; i < end; i++, o++) {
      const v = fround(values[i]! * inverse);
      codes[o] = ((v < 0 ? v - 0.5 : v + 0.5) | 0) + 128;
    }
    for (const stop = codesAt + (b + 1) * ggmlBlockSize; o < stop; o++) codes[o] = 128;
  }
}

function quantizeRowQ4(values: Float32Array, from: number, cols: number, codes: Uint8Array, codesAt: number, scales: Float32Array, scalesAt: number): void {
  const blocks = Math.ceil(cols / ggmlBlockSize);
  for (let b = 0; b < blocks; b++) {
    const start = from + b * ggmlBlockSize;
    const end = from + Math.min((b + 1) * ggmlBlockSize, cols);
    let max = 0;
    let maxAbs = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(values[i]!);
      if (a > maxAbs) {
        maxAbs = a;
        max = values[i]!;
      }
    }
    const d = fround(max / -8);
    const inverse = d === 0 ? 0 : fround(1 / d);
    scales[scalesAt + b] = roundToF16(d);
    let o = codesAt + b * ggmlBlockSize;
    for (let i = start; i < end; i++, o++) codes[o] = Math.min(15, Math.trunc(fround(fround(values[i]! * inverse) + 8.5)));
    for (const stop = codesAt + (b + 1) * ggmlBlockSize; o < stop; o++) codes[o] = 8;
  }
}

/** The value a code stands for. */
export function dequantize(type: GgmlBlockType, code: number, scale: number): number {
  return (code - zeroCode[type]) * scale;
}

/**
 * GGUF bytes of rows already quantized: per block an f16 scale, then Q8_0's 32 int8 codes or
 * Q4_0's 16 bytes (byte j holds element j in its low nibble and element j + 16 in its high one).
 */
export function ggufBlocks(type: GgmlBlockType, blocks: QuantizedBlocks): Uint8Array {
  const count = blocks.scales.length;
  const size = ggmlBlockBytes[type];
  const out = new Uint8Array(count * size);
  const view = new DataView(out.buffer);
  for (let b = 0; b < count; b++) {
    const at = b * size;
    const codes = blocks.codes.subarray(b * ggmlBlockSize, (b + 1) * ggmlBlockSize);
    view.setUint16(at, f32ToF16(blocks.scales[b]!), true);
    if (type === 'q8_0') for (let j = 0; j < 32; j++) out[at + 2 + j] = (codes[j]! - 128) & 0xff;
    else for (let j = 0; j < 16; j++) out[at + 2 + j] = codes[j]! | (codes[j + 16]! << 4);
  }
  return out;
}

/** The inverse of ggufBlocks: codes and scales of Q8_0 or Q4_0 blocks as a GGUF file stores them. */
export function blocksFromGguf(type: GgmlBlockType, bytes: Uint8Array): QuantizedBlocks {
  const size = ggmlBlockBytes[type];
  const count = bytes.byteLength / size;
  const codes = new Uint8Array(count * ggmlBlockSize);
  const scales = new Float32Array(count);
  for (let b = 0; b < count; b++) {
    const at = b * size;
    scales[b] = f16ToF32(bytes[at]! | (bytes[at + 1]! << 8));
    const c = b * ggmlBlockSize;
    if (type === 'q8_0') for (let j = 0; j < 32; j++) codes[c + j] = (bytes[at + 2 + j]! + 128) & 0xff;
    else {
      for (let j = 0; j < 16; j++) {
        codes[c + j] = bytes[at + 2 + j]! & 0x0f;
        codes[c + j + 16] = bytes[at + 2 + j]! >> 4;
      }
    }
  }
  return { codes, scales };
}
