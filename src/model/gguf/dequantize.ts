import { f16ToF32 } from '../dtype.js';
import type { GgmlTypeName } from './ggml-types.js';

let f16Table: Float32Array | null = null;

/** f16 bits to f32 for all 65536 values, once. */
function halfTable(): Float32Array {
  if (f16Table === null) f16Table = Float32Array.from({ length: 65536 }, (_, h) => f16ToF32(h));
  return f16Table;
}

/**
 * Decodes GGML tensor bytes (whole blocks) into f32 values, in the same order and with the same
 * f32 products as ggml's dequantize_row_* functions, so the values equal llama.cpp's own.
 */
export function dequantize(type: GgmlTypeName, bytes: Uint8Array, out: Float32Array): void {
  switch (type) {
    case 'F32':
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes);
    case 'F16': {
      const half = halfTable();
      for (let i = 0; i < out.length; i++) out[i] = half[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
      return;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
      for (let i = 0; i < out.length; i++) bits[i] = (bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16;
      return;
    }
    case 'Q8_0':
      return dequantizeQ8_0(bytes, out);
    case 'Q4_0':
      return dequantizeQ4_0(bytes, out);
    case 'Q4_K':
      return dequantizeQ4_K(bytes, out);
    case 'Q6_K':
      return dequantizeQ6_K(bytes, out);
  }
}

const f32 = Math.fround;

/** block_q8_0: f16 scale d, then 32 int8 quants; x = d * q. */
function dequantizeQ8_0(bytes: Uint8Array, out: Float32Array): void {
  const half = halfTable();
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0, p = 0, o = 0; o < out.length; b++, p += 34, o += 32) {
    const d = half[bytes[p]! | (bytes[p + 1]! << 8)]!;
    for (let j = 0; j < 32; j++) out[o + j] = d * signed[p + 2 + j]!;
  }
}

/** block_q4_0: f16 scale d, then 16 bytes; low nibbles are elements 0-15, high nibbles 16-31; x = d * (q - 8). */
function dequantizeQ4_0(bytes: Uint8Array, out: Float32Array): void {
  const half = halfTable();
  for (let p = 0, o = 0; o < out.length; p += 18, o += 32) {
    const d = half[bytes[p]! | (bytes[p + 1]! << 8)]!;
    for (let j = 0; j < 16; j++) {
      const q = bytes[p + 2 + j]!;
      out[o + j] = ((q & 0x0f) - 8) * d;
      out[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

/**
 * block_q4_K (256 elements): f16 d, f16 dmin, 12 bytes of eight 6-bit scales and eight 6-bit
 * mins, 128 bytes of 4-bit quants. Sub-block s of 32 elements: x = d * scale[s] * q - dmin * min[s].
 */
function dequantizeQ4_K(bytes: Uint8Array, out: Float32Array): void {
  const half = halfTable();
  for (let p = 0, o = 0; o < out.length; p += 144, o += 256) {
    const d = half[bytes[p]! | (bytes[p + 1]! << 8)]!;
    const dmin = half[bytes[p + 2]! | (bytes[p + 3]! << 8)]!;
    const scales = p + 4;
    let q = p + 16;
    let y = o;
    for (let s = 0; s < 8; s += 2) {
      const d1 = f32(d * q4kScale(bytes, scales, s));
      const m1 = f32(dmin * q4kMin(bytes, scales, s));
      const d2 = f32(d * q4kScale(bytes, scales, s + 1));
      const m2 = f32(dmin * q4kMin(bytes, scales, s + 1));
      for (let l = 0; l < 32; l++) out[y++] = f32(d1 * (bytes[q + l]! & 0x0f)) - m1;
      for (let l = 0; l < 32; l++) out[y++] = f32(d2 * (bytes[q + l]! >> 4)) - m2;
      q += 32;
    }
  }
}

/** The 6-bit scale of sub-block j: j < 4 in the low 6 bits of byte j, else split over bytes j+4 and j-4. */
export function q4kScale(bytes: Uint8Array, at: number, j: number): number {
  return j < 4 ? bytes[at + j]! & 63 : (bytes[at + j + 4]! & 0x0f) | ((bytes[at + j - 4]! >> 6) << 4);
}

/** The 6-bit min of sub-block j: j < 4 in the low 6 bits of byte j+4, else split over bytes j+4 and j. */
export function q4kMin(bytes: Uint8Array, at: number, j: number): number {
  return j < 4 ? bytes[at + j + 4]! & 63 : (bytes[at + j + 4]! >> 4) | ((bytes[at + j]! >> 6) << 4);
}

/**
 * block_q6_K (256 elements): 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 scales,
 * f16 d. Element x = d * scale[i / 16] * (q - 32), q a 6-bit value.
 */
function dequantizeQ6_K(bytes: Uint8Array, out: Float32Array): void {
  const half = halfTable();
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let p = 0, o = 0; o < out.length; p += 210, o += 256) {
    const d = half[bytes[p + 208]! | (bytes[p + 209]! << 8)]!;
    for (let n = 0; n < 2; n++) {
      const ql = p + 64 * n;
      const qh = p + 128 + 32 * n;
      const sc = p + 192 + 8 * n;
      const y = o + 128 * n;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = bytes[qh + l]!;
        const q1 = ((bytes[ql + l]! & 0x0f) | ((h & 3) << 4)) - 32;
        const q2 = ((bytes[ql + l + 32]! & 0x0f) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((bytes[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((bytes[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        out[y + l] = f32(d * signed[sc + is]!) * q1;
        out[y + l + 32] = f32(d * signed[sc + is + 2]!) * q2;
        out[y + l + 64] = f32(d * signed[sc + is + 4]!) * q3;
        out[y + l + 96] = f32(d * signed[sc + is + 6]!) * q4;
      }
    }
  }
}
