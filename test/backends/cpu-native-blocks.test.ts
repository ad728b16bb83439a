import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dummyRow } from '../../backends/cpu/block-worker.js';
import { ggmlBlockSize, quantizeRows, zeroCode, type GgmlBlockType } from '../../backends/cpu/ggml-blocks.js';
import { nativeBlocks, nativeBlocksPath } from '../../backends/cpu/native-blocks.js';
import { f16ToF32 } from '../../src/model/dtype.js';
import { Rng } from '../../src/model/rng.js';

// The CPU addon must make the very blocks the TypeScript does: a load with it is only faster.

function onPath(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

describe('the cpu addon build', () => {
  it.runIf(!process.env.SLUICE_SKIP_NATIVE && onPath('cmake') && onPath('c++'))('is built by the install where cmake and a C++ compiler are present', () => {
    expect(existsSync(nativeBlocksPath)).toBe(true);
    expect(nativeBlocks).not.toBeNull();
  });
});

function jsBlocks(type: GgmlBlockType, values: Float32Array, rows: number, cols: number) {
  const blocks = rows * Math.ceil(cols / ggmlBlockSize);
  const out = { codes: new Uint8Array(blocks * ggmlBlockSize), scales: new Float32Array(blocks) };
  quantizeRows(type, values, rows, cols, out);
  return out;
}

function nativeOf(type: GgmlBlockType, rows: number, cols: number, fill: (codes: Uint8Array, scales: Float32Array) => void) {
  const blocks = rows * Math.ceil(cols / ggmlBlockSize);
  // Filled with a code no block writes to its padding, so unwritten bytes show.
  const out = { codes: new Uint8Array(blocks * ggmlBlockSize).fill(77), scales: new Float32Array(blocks).fill(-1234) };
  fill(out.codes, out.scales);
  return out;
}

function expectSameBlocks(actual: { codes: Uint8Array; scales: Float32Array }, expected: { codes: Uint8Array; scales: Float32Array }) {
  const firstCode = actual.codes.findIndex((c, i) => c !== expected.codes[i]);
  expect(firstCode, `first differing code at ${firstCode}`).toBe(-1);
  const firstScale = actual.scales.findIndex((s, i) => !Object.is(s, expected.scales[i]));
  expect(firstScale, `first differing scale at ${firstScale}`).toBe(-1);
}

describe.skipIf(!nativeBlocks)('cpu addon blocks', () => {
  const addon = nativeBlocks!;

  /** Rows with what the rounding rules are sensitive to: ties, zeros, negative maxima, f16 subnormal and huge scales, NaN. */
  function awkwardRows(rows: number, cols: number, seed: number): Float32Array {
    const rng = new Rng(seed);
    const random = () => rng.next();
    const values = new Float32Array(rows * cols);
    // One magnitude per block, so that scales land in f16's normal and subnormal ranges, under it and over it.
    const magnitudes = [1e-2, 1, 1e-4, 1e-5, 1e-6, 1e-9, 3e4, 1e7];
    let scale = 1;
    for (let i = 0; i < values.length; i++) {
      if (i % ggmlBlockSize === 0) scale = magnitudes[Math.floor(random() * magnitudes.length)]!;
      const kind = Math.floor(random() * 10);
      values[i] = kind === 0 ? 0 : kind === 1 ? Math.round(random() * 254 - 127) / 2 : (random() * 2 - 1) * scale;
    }
    values.fill(0, 0, Math.min(cols, 40)); // an all-zero block
    values[cols + 3] = -1e-38; // below f32's normal range
    values[2 * cols + 5] = Number.NaN;
    return values;
  }

  it.each(['q8_0', 'q4_0'] as const)('%s: quantizeRows equals the TypeScript bit for bit (ragged last block too)', (type) => {
    for (const cols of [32, 96, 100, 2048 + 7]) {
      const rows = 9;
      const values = awkwardRows(rows, cols, cols);
      const expected = jsBlocks(type, values, rows, cols);
      const actual = nativeOf(type, rows, cols, (codes, scales) => addon.quantizeRows(type, values, rows, cols, codes, scales));
      expectSameBlocks(actual, expected);
    }
  });

  it.each([
    ['q8_0', 'bf16', 0],
    ['q4_0', 'bf16', 5 * 2 ** 32 + 17],
    ['q8_0', 'f32', 2 ** 32 - 3 * 1000 - 1], // rows cross a change of the index's high word
    ['q4_0', 'f32', 2 ** 40 + 123],
  ] as const)('%s of %s dummy rows from element %d equal dummyRow + quantizeRows', (type, dtype, firstIndex) => {
    const rows = 7;
    const cols = 1000;
    const recipe = { kind: 'hash-uniform' as const, key: 0x9abcdef1, halfRange: 0.05, offset: dtype === 'f32' ? 0.001 : 0 };
    const values = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) dummyRow(recipe, dtype, firstIndex + r * cols, values.subarray(r * cols, (r + 1) * cols));
    const expected = jsBlocks(type, values, rows, cols);
    const actual = nativeOf(type, rows, cols, (codes, scales) => addon.dummyRows(type, recipe.key, recipe.halfRange, recipe.offset, dtype, firstIndex, rows, cols, codes, scales));
    expectSameBlocks(actual, expected);
  });

  it('refuses arrays too short for the rows and unknown block types', () => {
    const values = new Float32Array(64);
    expect(() => addon.quantizeRows('q8_0', values, 2, 64, new Uint8Array(128), new Float32Array(4))).toThrow(/values too short/);
    expect(() => addon.quantizeRows('q8_0', values, 1, 64, new Uint8Array(32), new Float32Array(2))).toThrow(/too short/);
    expect(() => addon.quantizeRows('q5_0' as GgmlBlockType, values, 1, 64, new Uint8Array(64), new Float32Array(2))).toThrow(/unknown block type q5_0/);
  });
});

/** x W^T in f64 over W's dequantized blocks (Q8_0 by default, codes q + 128), and x's own quantization error bound per output. */
function gemmReference(x: Float32Array, m: number, k: number, codes: Uint8Array, scales: Float32Array, n: number, type: GgmlBlockType = 'q8_0') {
  const zero = zeroCode[type];
  const exact = new Float64Array(m * n);
  const bound = new Float64Array(m * n);
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      let err = 0;
      for (let b = 0; b < k / 32; b++) {
        let maxAbs = 0;
        for (let i = 0; i < 32; i++) maxAbs = Math.max(maxAbs, Math.abs(x[r * k + b * 32 + i]!));
        for (let i = 0; i < 32; i++) {
          const w = (codes[j * k + b * 32 + i]! - zero) * scales[j * (k / 32) + b]!;
          sum += x[r * k + b * 32 + i]! * w;
          err += Math.abs(w) * (maxAbs / 127 / 2); // half a step of x's block
        }
      }
      exact[r * n + j] = sum;
      bound[r * n + j] = err * 1.01 + 1e-5;
    }
  }
  return { exact, bound };
}

describe.skipIf(!nativeBlocks)('cpu addon Q8_0 GEMM', () => {
  const addon = nativeBlocks!;

  it.each([
    [1, 512, 8],
    [5, 1024, 13], // row and column counts off the kernel's tiles of 4
    [9, 96, 6], // k not a multiple of 512: the portable loop
  ])('m=%i k=%i n=%i: within x quantization error of the exact product, on 1 and 3 threads', (m, k, n) => {
    const rng = new Rng(k + n);
    const x = Float32Array.from({ length: m * k }, () => rng.next() * 2 - 1);
    const w = Float32Array.from({ length: n * k }, () => (rng.next() * 2 - 1) * 0.05);
    const blocks = jsBlocks('q8_0', w, n, k);
    const { exact, bound } = gemmReference(x, m, k, blocks.codes, blocks.scales, n);
    for (const threads of [1, 3]) {
      const y = new Float32Array(m * n).fill(Number.NaN);
      addon.q8Gemm(x, m, k, blocks.codes, blocks.scales, n, y, threads);
      for (let i = 0; i < m * n; i++) expect(Math.abs(y[i]! - exact[i]!), `output ${i} on ${threads} threads`).toBeLessThanOrEqual(bound[i]!);
    }
  });

  it('refuses k off whole blocks and arrays too short', () => {
    const y = new Float32Array(4);
    expect(() => addon.q8Gemm(new Float32Array(40), 1, 40, new Uint8Array(160), new Float32Array(8), 4, y, 1)).toThrow(/multiple of 32/);
    expect(() => addon.q8Gemm(new Float32Array(32), 1, 64, new Uint8Array(256), new Float32Array(8), 4, y, 1)).toThrow(/too short/);
  });
});

describe.skipIf(!nativeBlocks)('cpu addon Q8_0 GEMM over packed tiles', () => {
  const addon = nativeBlocks!;

  function packed(codes: Uint8Array, scales: Float32Array, n: number, k: number) {
    const rows = Math.ceil(n / 16) * 16;
    const out = { codes: new Int8Array(rows * k), scales: new Uint16Array((rows * k) / 32) };
    addon.packQ8Tiles(codes, scales, n, k, out.codes, out.scales);
    return out;
  }

  it('packs each block of 16 rows as 8 rows of four columns per weight row, codes signed, scales f16, padding zero', () => {
    const n = 20;
    const k = 64;
    const rng = new Rng(3);
    const blocks = jsBlocks('q8_0', Float32Array.from({ length: n * k }, () => rng.next() - 0.5), n, k);
    const tiles = packed(blocks.codes, blocks.scales, n, k);
    for (let row = 0; row < 32; row++) {
      for (let col = 0; col < k; col++) {
        const [t, j, b, kk, i] = [row >> 4, row % 16, col >> 5, (col % 32) >> 2, col % 4];
        const at = (t * (k / 32) + b) * 512 + kk * 64 + j * 4 + i;
        expect(tiles.codes[at], `row ${row} col ${col}`).toBe(row < n ? blocks.codes[row * k + col]! - 128 : 0);
      }
      for (let b = 0; b < k / 32; b++) {
        const bits = tiles.scales[((row >> 4) * (k / 32) + b) * 16 + (row % 16)]!;
        expect(f16ToF32(bits), `row ${row} block ${b}`).toBe(row < n ? blocks.scales[row * (k / 32) + b]! : 0);
      }
    }
  });

  it.each([
    [1, 512, 40],
    [3, 1024, 16],
    [8, 256, 48], // 8 rows in one pass of the dot-product kernel
    [9, 256, 48], // from 9 rows on, AMX where the CPU grants it
    [21, 96, 24], // an odd number of blocks, rows off whole tiles
    [40, 2048, 37], // columns off whole tiles
  ])('m=%i k=%i n=%i: within x quantization error of the exact product, on 1 and 3 threads', (m, k, n) => {
    const rng = new Rng(k * n + m);
    const x = Float32Array.from({ length: m * k }, () => rng.next() * 2 - 1);
    const w = Float32Array.from({ length: n * k }, () => (rng.next() * 2 - 1) * 0.05);
    const blocks = jsBlocks('q8_0', w, n, k);
    const tiles = packed(blocks.codes, blocks.scales, n, k);
    const { exact, bound } = gemmReference(x, m, k, blocks.codes, blocks.scales, n);
    for (const threads of [1, 3]) {
      const y = new Float32Array(m * n + 16).fill(Number.NaN);
      addon.q8TilesGemm(x, m, k, tiles.codes, tiles.scales, n, y, threads);
      for (let i = 0; i < m * n; i++) expect(Math.abs(y[i]! - exact[i]!), `output ${i} on ${threads} threads`).toBeLessThanOrEqual(bound[i]!);
      expect(y.subarray(m * n).every(Number.isNaN), 'nothing written past m rows').toBe(true);
    }
  });

  it('computes the same products for a row alone (dot products) as among 24 rows (the many-row kernel)', () => {
    const [m, k, n] = [24, 512, 32];
    const rng = new Rng(11);
    const x = Float32Array.from({ length: m * k }, () => rng.next() * 2 - 1);
    const blocks = jsBlocks('q8_0', Float32Array.from({ length: n * k }, () => rng.next() - 0.5), n, k);
    const tiles = packed(blocks.codes, blocks.scales, n, k);
    const all = new Float32Array(m * n);
    addon.q8TilesGemm(x, m, k, tiles.codes, tiles.scales, n, all, 2);
    for (const r of [0, 7, 23]) {
      const alone = new Float32Array(n);
      addon.q8TilesGemm(x.subarray(r * k, (r + 1) * k), 1, k, tiles.codes, tiles.scales, n, alone, 2);
      for (let j = 0; j < n; j++) expect(Math.abs(alone[j]! - all[r * n + j]!), `row ${r} column ${j}`).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(alone[j]!)));
    }
    expect(['amx', 'avx512-vnni', 'scalar']).toContain(addon.tilesKernel);
  });

  it('refuses k off whole blocks and arrays too short', () => {
    expect(() => addon.packQ8Tiles(new Uint8Array(40), new Float32Array(2), 1, 40, new Int8Array(640), new Uint16Array(32))).toThrow(/multiple of 32/);
    expect(() => addon.packQ8Tiles(new Uint8Array(64), new Float32Array(2), 2, 32, new Int8Array(256), new Uint16Array(16))).toThrow(/too short/);
    expect(() => addon.q8TilesGemm(new Float32Array(32), 1, 32, new Int8Array(256), new Uint16Array(16), 1, new Float32Array(1), 1)).toThrow(/too short/);
  });
});

describe.skipIf(!nativeBlocks)('cpu addon Q4_0 GEMM over packed tiles', () => {
  const addon = nativeBlocks!;

  function packed(codes: Uint8Array, scales: Float32Array, n: number, k: number) {
    const rows = Math.ceil(n / 16) * 16;
    const out = { codes: new Uint8Array((rows * k) / 2), scales: new Uint16Array((rows * k) / 32) };
    addon.packQ4Tiles(codes, scales, n, k, out.codes, out.scales);
    return out;
  }

  /** Weights whose blocks span the codes 0..15 and scales of both signs. */
  function weights(n: number, k: number, rng: Rng) {
    return jsBlocks('q4_0', Float32Array.from({ length: n * k }, () => (rng.next() * 2 - 1) * 0.05), n, k);
  }

  it('packs 16 rows by one block a tile, two codes a byte (columns c and c + 16), scales f16, padding rows the zero code', () => {
    const [n, k] = [20, 64];
    const blocks = weights(n, k, new Rng(3));
    const tiles = packed(blocks.codes, blocks.scales, n, k);
    expect(tiles.codes.length).toBe((32 * k) / 2);
    for (let row = 0; row < 32; row++) {
      for (let col = 0; col < k; col++) {
        const [t, j, b, c] = [row >> 4, row % 16, col >> 5, col % 32];
        const byte = tiles.codes[(t * (k / 32) + b) * 256 + (c % 16 >> 2) * 64 + j * 4 + (c % 4)]!;
        const code = c < 16 ? byte & 0x0f : byte >> 4;
        expect(code, `row ${row} col ${col}`).toBe(row < n ? blocks.codes[row * k + col]! : 8);
      }
      for (let b = 0; b < k / 32; b++) {
        const bits = tiles.scales[((row >> 4) * (k / 32) + b) * 16 + (row % 16)]!;
        expect(f16ToF32(bits), `row ${row} block ${b}`).toBe(row < n ? blocks.scales[row * (k / 32) + b]! : 0);
      }
    }
  });

  it.each([
    [1, 96, 40], // an odd number of blocks
    [3, 1024, 16],
    [8, 288, 48], // 8 rows in one pass of the dot-product kernel
    [9, 224, 48], // from 9 rows on, AMX where the CPU grants it
    [17, 96, 24], // rows off whole tiles
    [21, 2080, 37], // 65 blocks, columns off whole tiles
    [40, 160, 37],
  ])('m=%i k=%i n=%i: within x quantization error of the exact product, on 1 and 3 threads', (m, k, n) => {
    const rng = new Rng(k * n + m);
    const x = Float32Array.from({ length: m * k }, () => rng.next() * 2 - 1);
    const blocks = weights(n, k, rng);
    const tiles = packed(blocks.codes, blocks.scales, n, k);
    const { exact, bound } = gemmReference(x, m, k, blocks.codes, blocks.scales, n, 'q4_0');
    for (const threads of [1, 3]) {
      const y = new Float32Array(m * n + 16).fill(Number.NaN);
      addon.q4TilesGemm(x, m, k, tiles.codes, tiles.scales, n, y, threads);
      for (let i = 0; i < m * n; i++) expect(Math.abs(y[i]! - exact[i]!), `output ${i} on ${threads} threads`).toBeLessThanOrEqual(bound[i]!);
      expect(y.subarray(m * n).every(Number.isNaN), 'nothing written past m rows').toBe(true);
    }
  });

  it('computes the same products for a row alone (dot products) as among 24 rows (the many-row kernel)', () => {
    const [m, k, n] = [24, 512, 32];
    const rng = new Rng(11);
    const x = Float32Array.from({ length: m * k }, () => rng.next() * 2 - 1);
    const blocks = weights(n, k, rng);
    const tiles = packed(blocks.codes, blocks.scales, n, k);
    const all = new Float32Array(m * n);
    addon.q4TilesGemm(x, m, k, tiles.codes, tiles.scales, n, all, 2);
    for (const r of [0, 7, 23]) {
      const alone = new Float32Array(n);
      addon.q4TilesGemm(x.subarray(r * k, (r + 1) * k), 1, k, tiles.codes, tiles.scales, n, alone, 2);
      for (let j = 0; j < n; j++) expect(Math.abs(alone[j]! - all[r * n + j]!), `row ${r} column ${j}`).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(alone[j]!)));
    }
  });

  it('refuses k off whole blocks and arrays too short (codes: half a byte a weight)', () => {
    expect(() => addon.packQ4Tiles(new Uint8Array(40), new Float32Array(2), 1, 40, new Uint8Array(320), new Uint16Array(32))).toThrow(/multiple of 32/);
    expect(() => addon.packQ4Tiles(new Uint8Array(64), new Float32Array(2), 2, 32, new Uint8Array(255), new Uint16Array(16))).toThrow(/too short/);
    expect(() => addon.q4TilesGemm(new Float32Array(32), 1, 32, new Uint8Array(255), new Uint16Array(16), 1, new Float32Array(1), 1)).toThrow(/too short/);
    addon.q4TilesGemm(new Float32Array(32), 1, 32, new Uint8Array(256), new Uint16Array(16), 1, new Float32Array(1), 1);
  });
});
