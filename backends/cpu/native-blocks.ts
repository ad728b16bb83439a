import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { GgmlBlockType } from './ggml-blocks.js';
import type { HostAttentionBatch } from './layer-kernels.js';

/**
 * The CPU addon (native/cpu, built at install when a C++ compiler and cmake are present): the
 * load's block work in C++, the same blocks bit for bit as ggml-blocks.ts and block-worker.ts
 * make in TypeScript (test/backends/cpu-native-blocks.test.ts holds them to it). Those stay the
 * fallback: without the addon a load is slower, never different.
 */
export interface NativeBlocks {
  /** Rows of f32 values into blocks (codes of row r at r * blocksPerRow * 32, scales at r * blocksPerRow). */
  quantizeRows(type: GgmlBlockType, values: Float32Array, rows: number, cols: number, codes: Uint8Array, scales: Float32Array): void;
  /** Rows of a dummy tensor, element firstIndex on, generated and quantized in one pass. */
  dummyRows(
    type: GgmlBlockType,
    key: number,
    halfRange: number,
    offset: number,
    dtype: 'f32' | 'bf16',
    firstIndex: number,
    rows: number,
    cols: number,
    codes: Uint8Array,
    scales: Float32Array,
  ): void;
  /**
   * y = x W^T for W in Q8_0 blocks ([n, k] codes, q + 128) with x quantized to Q8_0 per block
   * (llama.cpp's CPU arithmetic), over the blocks as stored: bench:cpu-gemm's `native` variant
   * (the host linears run q8TilesGemm). The addon's kernels share one thread pool per process,
   * which takes one caller at a time (others wait).
   */
  q8Gemm(x: Float32Array, m: number, k: number, codes: Uint8Array, scales: Float32Array, n: number, y: Float32Array, threads: number): void;
  /** Whether q8Gemm has its AVX-512 VNNI kernel here (else a portable scalar loop). */
  q8GemmVectorized: boolean;
  /**
   * Q8_0 blocks ([n, k] codes q + 128, f32 scales) into the tile layout of q8TilesGemm
   * (native/cpu/src/q8_tiles.h): 16 rows by one block a tile, n padded to a multiple of 16
   * (packedCodes: that many rows * k bytes; packedScales: f16, one a row and block).
   */
  packQ8Tiles(codes: Uint8Array, scales: Float32Array, n: number, k: number, packedCodes: Int8Array, packedScales: Uint16Array): void;
  /** y = x W^T over weights packed by packQ8Tiles, x quantized per block of 32 (llama.cpp's Q8_0 arithmetic). */
  q8TilesGemm(x: Float32Array, m: number, k: number, packedCodes: Int8Array, packedScales: Uint16Array, n: number, y: Float32Array, threads: number): void;
  /**
   * Q4_0 blocks ([n, k] codes q, 0..15, f32 scales) into the tile layout of q4TilesGemm
   * (native/cpu/src/q4_tiles.h): 16 rows by one block a tile, two codes a byte, n padded to a
   * multiple of 16 (packedCodes: that many rows * k / 2 bytes; packedScales: f16, one a row and block).
   */
  packQ4Tiles(codes: Uint8Array, scales: Float32Array, n: number, k: number, packedCodes: Uint8Array, packedScales: Uint16Array): void;
  /** y = x W^T over weights packed by packQ4Tiles, x quantized per block of 32 (llama.cpp's Q4_0 arithmetic). */
  q4TilesGemm(x: Float32Array, m: number, k: number, packedCodes: Uint8Array, packedScales: Uint16Array, n: number, y: Float32Array, threads: number): void;
  /** What the tiled GEMMs (q8TilesGemm, q4TilesGemm) run for many rows here: AMX tiles, AVX-512 VNNI dot products, or a portable loop. */
  tilesKernel: 'amx' | 'avx512-vnni' | 'scalar';
  /** Host layer ops of --cpu-gemm native (native/cpu/src/layer_ops.h): rows of cols f32 values, on up to `threads` threads. */
  rmsNorm(x: Float32Array, rows: number, cols: number, weight: Float32Array, eps: number, out: Float32Array, threads: number): void;
  /** x += residual, then out = rmsNorm(x). */
  addRmsNorm(x: Float32Array, residual: Float32Array, rows: number, cols: number, weight: Float32Array, eps: number, out: Float32Array, threads: number): void;
  addInPlace(x: Float32Array, y: Float32Array, n: number): void;
  siluMul(gate: Float32Array, up: Float32Array, n: number, out: Float32Array, threads: number): void;
  /** Rotary embedding in place; cos and sin [rows, headDim / 2]. */
  rope(x: Float32Array, rows: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array, threads: number): void;
  /** The step's K and V rows into the layer's [numKvHeads, numSlots, headDim] caches, then causal GQA attention (native/cpu/src/attention.h); every slot checked. */
  pagedAttention(q: Float32Array, k: Float32Array, v: Float32Array, kCache: Float32Array, vCache: Float32Array, batch: HostAttentionBatch, out: Float32Array, threads: number): void;
}

export const nativeBlocksPath = fileURLToPath(new URL('../../native/cpu/build/Release/sluice_cpu.node', import.meta.url));

/** The addon, or null when it is not built or SLUICE_CPU_ADDON=off asks for the TypeScript path. */
export const nativeBlocks: NativeBlocks | null = loadNativeBlocks();

function loadNativeBlocks(): NativeBlocks | null {
  if (process.env.SLUICE_CPU_ADDON === 'off' || !existsSync(nativeBlocksPath)) return null;
  return createRequire(import.meta.url)(nativeBlocksPath) as NativeBlocks;
}
