import { ggufBlocks, quantizeRows } from '../../backends/cpu/ggml-blocks.js';
import { f16ToF32, f32ToF16 } from '../../src/model/dtype.js';

/**
 * Quantizers of one row into GGML blocks, for writing test GGUF files. Q8_0 and Q4_0 follow
 * ggml's rules (the cpu backend's quantizer); the K-quants choose scales simply (max-abs,
 * min/max) rather than with llama.cpp's search, which a reader need not know: any valid block
 * decodes the same way. Row lengths must be whole blocks.
 */
export type QuantType = 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';

export const quantBlock: Record<QuantType, { size: number; bytes: number }> = {
  q8_0: { size: 32, bytes: 34 },
  q4_0: { size: 32, bytes: 18 },
  q4_k: { size: 256, bytes: 144 },
  q6_k: { size: 256, bytes: 210 },
};

export function quantizeRow(type: QuantType, x: Float32Array): Uint8Array {
  const { size, bytes } = quantBlock[type];
  if (x.length % size !== 0) throw new Error(`${type}: a row of ${x.length} is not whole blocks of ${size}`);
  if (type === 'q8_0' || type === 'q4_0') {
    const blocks = { codes: new Uint8Array(x.length), scales: new Float32Array(x.length / size) };
    quantizeRows(type, x, 1, x.length, blocks);
    return ggufBlocks(type, blocks);
  }
  const out = new Uint8Array((x.length / size) * bytes);
  const view = new DataView(out.buffer);
  for (let b = 0; b < x.length / size; b++) {
    const block = x.subarray(b * size, (b + 1) * size);
    const at = b * bytes;
    if (type === 'q4_k') q4_k(block, out, view, at);
    else q6_k(block, out, view, at);
  }
  return out;
}

const half = (v: number) => f16ToF32(f32ToF16(v));

/** Eight sub-blocks of 32: x ~ d * sc * q - dmin * m with 6-bit sc, m and 4-bit q. */
function q4_k(x: Float32Array, out: Uint8Array, view: DataView, at: number): void {
  const scale = new Float64Array(8);
  const min = new Float64Array(8);
  for (let s = 0; s < 8; s++) {
    const sub = x.subarray(s * 32, s * 32 + 32);
    const lo = Math.min(0, ...sub);
    const hi = Math.max(...sub);
    scale[s] = (hi - lo) / 15;
    min[s] = -lo;
  }
  const d = half(Math.max(...scale) / 63);
  const dmin = half(Math.max(...min) / 63);
  view.setUint16(at, f32ToF16(d), true);
  view.setUint16(at + 2, f32ToF16(dmin), true);
  const sc = Array.from(scale, (v) => (d === 0 ? 0 : Math.min(63, Math.round(v / d))));
  const mn = Array.from(min, (v) => (dmin === 0 ? 0 : Math.min(63, Math.round(v / dmin))));
  const scales = at + 4;
  for (let j = 0; j < 4; j++) {
    out[scales + j] = sc[j]! | ((sc[j + 4]! >> 4) << 6);
    out[scales + j + 4] = mn[j]! | ((mn[j + 4]! >> 4) << 6);
    out[scales + j + 8] = (sc[j + 4]! & 0x0f) | ((mn[j + 4]! & 0x0f) << 4);
  }
  const qs = at + 16;
  const quant = (s: number, v: number) => {
    const step = d * sc[s]!;
    return step === 0 ? 0 : Math.min(15, Math.max(0, Math.round((v + dmin * mn[s]!) / step)));
  };
  for (let pair = 0; pair < 4; pair++) {
    for (let l = 0; l < 32; l++) {
      const lowNibble = quant(2 * pair, x[64 * pair + l]!);
      const highNibble = quant(2 * pair + 1, x[64 * pair + 32 + l]!);
      out[qs + 32 * pair + l] = lowNibble | (highNibble << 4);
    }
  }
}

/** Sixteen sub-blocks of 16: x ~ d * sc * (q - 32) with int8 sc and 6-bit q. */
function q6_k(x: Float32Array, out: Uint8Array, view: DataView, at: number): void {
  const scale = new Float64Array(16);
  for (let g = 0; g < 16; g++) scale[g] = Math.max(...Array.from(x.subarray(g * 16, g * 16 + 16), Math.abs)) / 31;
  const d = half(Math.max(...scale) / 127);
  view.setUint16(at + 208, f32ToF16(d), true);
  const sc = Array.from(scale, (v) => (d === 0 ? 0 : Math.min(127, Math.round(v / d))));
  for (let g = 0; g < 16; g++) view.setInt8(at + 192 + g, sc[g]!);
  const q = new Uint8Array(256);
  for (let i = 0; i < 256; i++) {
    const step = d * sc[i >> 4]!;
    q[i] = (step === 0 ? 0 : Math.min(31, Math.max(-32, Math.round(x[i]! / step)))) + 32;
  }
  for (let n = 0; n < 2; n++) {
    for (let l = 0; l < 32; l++) {
      const [q1, q2, q3, q4] = [0, 32, 64, 96].map((k) => q[128 * n + k + l]!) as [number, number, number, number];
      out[at + 64 * n + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
      out[at + 64 * n + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
      out[at + 128 + 32 * n + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
    }
  }
}
