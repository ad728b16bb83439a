/**
 * 8-bit floating-point codes for the KV cache (`--kv-cache-dtype fp8_e4m3 | fp8_e5m2`, vLLM's and
 * SGLang's names): OCP FP8 E4M3 ("fn": no infinities, max 448) and E5M2 (IEEE-like, max 57344),
 * one byte per value and no scale, as vLLM stores an FP8 KV cache without calibrated scales.
 * Encoding rounds to nearest, ties to even, and saturates at the largest finite value (as vLLM's
 * kernels do) instead of producing NaN. The graph decodes them through a 256-entry f32 table.
 */
export type Fp8Format = 'fp8_e4m3' | 'fp8_e5m2';

interface Layout {
  mantissaBits: number;
  bias: number;
  /** The largest finite code's magnitude bits (sign cleared). */
  maxCode: number;
}

const layouts: Record<Fp8Format, Layout> = {
  fp8_e4m3: { mantissaBits: 3, bias: 7, maxCode: 0x7e },
  fp8_e5m2: { mantissaBits: 2, bias: 15, maxCode: 0x7b },
};

/** The value of each of the 256 codes (NaN and infinity codes decode to NaN and +-Infinity). */
export function fp8Table(format: Fp8Format): Float32Array {
  const { mantissaBits: m, bias } = layouts[format];
  const table = new Float32Array(256);
  const maxExponent = (1 << (7 - m)) - 1;
  for (let code = 0; code < 256; code++) {
    const sign = code & 0x80 ? -1 : 1;
    const exponent = (code & 0x7f) >> m;
    const mantissa = code & ((1 << m) - 1);
    let value: number;
    if (format === 'fp8_e4m3' && (code & 0x7f) === 0x7f) value = NaN;
    else if (format === 'fp8_e5m2' && exponent === maxExponent) value = mantissa === 0 ? Infinity : NaN;
    else if (exponent === 0) value = mantissa * 2 ** (1 - bias - m);
    else value = (1 + mantissa / (1 << m)) * 2 ** (exponent - bias);
    table[code] = sign * value;
  }
  return table;
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/** Round half to even. */
function roundEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Writes the codes of `values` into `out` (same length). */
export function encodeFp8(format: Fp8Format, values: Float32Array, out: Uint8Array): void {
  const { mantissaBits: m, bias, maxCode } = layouts[format];
  const minNormalExponent = 1 - bias;
  const subnormalStep = 2 ** (minNormalExponent - m);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
    const a = Math.abs(v);
    let code: number;
    if (Number.isNaN(a)) code = 0x7f;
    else if (a < 2 ** minNormalExponent) {
      // Subnormals; a result of 1 << m carries into the smallest normal code, which is where it belongs.
      code = roundEven(a / subnormalStep);
    } else {
      f32[0] = a;
      const exponent = ((f32Bits[0]! >>> 23) & 0xff) - 127;
      // Codes are monotonic in magnitude, so a mantissa that rounds up to 2^m carries into the next exponent.
      code = ((exponent + bias) << m) + roundEven(a / 2 ** (exponent - m)) - (1 << m);
    }
    out[i] = sign | Math.min(code, maxCode);
  }
}
