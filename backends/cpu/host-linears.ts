import { BackendError } from '../../src/errors.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import { ggmlBlockSize, type GgmlBlockType, type QuantizedBlocks } from './ggml-blocks.js';
import { blockTypeOf, type WeightFormat } from './linear-weights.js';
import { nativeBlocks, type NativeBlocks } from './native-blocks.js';
import { stackedLinears } from './segment-graph.js';

/**
 * A matrix as a block kernel keeps it: `rows` x `cols` (cols a multiple of 32), plus whatever
 * layout the kernel packed the blocks into. Opaque to the backend.
 */
export interface PreparedMatrix {
  readonly rows: number;
  readonly cols: number;
}

/**
 * The GEMM the cpu backend's linear layers run on the host with --cpu-gemm native: y = x W^T for
 * W in ggml blocks of one type (Q8_0 or Q4_0), x quantized to Q8_0 per row and block of 32
 * (llama.cpp's arithmetic).
 */
export interface BlockKernel<W extends PreparedMatrix = PreparedMatrix> {
  /** Named in the backend's description. */
  readonly name: string;
  /** The blocks `prepare` takes: the backend picks the kernel of its load's format. */
  readonly blockType: GgmlBlockType;
  /**
   * The kernel's own copy of W, once at load. `blocks`: codes [rows, cols] (Q8_0: q + 128; Q4_0:
   * q, 0..15) and one f32 scale per block [rows, cols / 32], row-major; cols is a multiple of 32.
   * The blocks may be overwritten after prepare returns (they can live in a load's reused arena).
   */
  prepare(blocks: QuantizedBlocks, rows: number, cols: number): W;
  /** y[m, w.rows] = x[m, w.cols] W^T, every step; m >= 1. */
  run(x: Float32Array, m: number, w: W, y: Float32Array): void;
  /** Rows [first, first + rows) of a prepared matrix as one of its own, sharing its memory; null where the layout cannot cut there. */
  slice?(w: W, first: number, rows: number): W | null;
}

/** A matrix packed into the addon's tiles of 16 rows: its code bytes (k a row for Q8_0, k / 2 for Q4_0) and f16 scales. */
interface Tiled extends PreparedMatrix {
  codes: Int8Array | Uint8Array;
  scales: Uint16Array;
}

const tileRows = 16;
const paddedRows = (rows: number) => Math.ceil(rows / tileRows) * tileRows;

function addonOrThrow(kernel: string): NativeBlocks {
  if (!nativeBlocks) throw new Error(`${kernel}: the native/cpu addon is not loaded`);
  return nativeBlocks;
}

function tiledName(gemm: string, addon: NativeBlocks, threads: number): string {
  return `native/cpu ${gemm} (${addon.tilesKernel}, ${threads} thread${threads === 1 ? '' : 's'})`;
}

/** Rows [first, first + rows) of a tiled matrix of `bitsPerCode` codes, or null for a cut inside a tile. */
function sliceTiles<W extends Tiled>(w: W, first: number, rows: number, bitsPerCode: 8 | 4): W | null {
  if (first % tileRows !== 0 || (rows % tileRows !== 0 && first + rows !== w.rows)) return null;
  const end = first + Math.ceil(rows / tileRows) * tileRows;
  const codesPerRow = (w.cols * bitsPerCode) / 8;
  const scalesPerRow = w.cols / ggmlBlockSize;
  return { ...w, rows, codes: w.codes.subarray(first * codesPerRow, end * codesPerRow), scales: w.scales.subarray(first * scalesPerRow, end * scalesPerRow) };
}

/**
 * The addon's q8TilesGemm: Q8_0 blocks packed at load into 16-row tiles (native/cpu/src/q8_tiles.h),
 * multiplied by AMX above 8 rows where the CPU grants it, else by VNNI dot products.
 */
export function tiledQ8Kernel(threads: number): BlockKernel<Tiled & { codes: Int8Array }> {
  const addon = addonOrThrow('tiledQ8Kernel');
  return {
    name: tiledName('q8TilesGemm', addon, threads),
    blockType: 'q8_0',
    prepare(blocks, rows, cols) {
      const packed = { rows, cols, codes: new Int8Array(paddedRows(rows) * cols), scales: new Uint16Array((paddedRows(rows) * cols) / ggmlBlockSize) };
      addon.packQ8Tiles(blocks.codes, blocks.scales, rows, cols, packed.codes, packed.scales);
      return packed;
    },
    run: (x, m, w, y) => addon.q8TilesGemm(x, m, w.cols, w.codes, w.scales, w.rows, y, threads),
    slice: (w, first, rows) => sliceTiles(w, first, rows, 8),
  };
}

/**
 * The addon's q4TilesGemm: Q4_0 blocks packed at load into 16-row tiles of 4-bit codes
 * (native/cpu/src/q4_tiles.h), half the bytes of Q8_0's; the same kernels as q8TilesGemm, AMX
 * over a run of tiles unpacked to 8 bits at a time.
 */
export function tiledQ4Kernel(threads: number): BlockKernel<Tiled & { codes: Uint8Array }> {
  const addon = addonOrThrow('tiledQ4Kernel');
  return {
    name: tiledName('q4TilesGemm', addon, threads),
    blockType: 'q4_0',
    prepare(blocks, rows, cols) {
      const packed = { rows, cols, codes: new Uint8Array((paddedRows(rows) * cols) / 2), scales: new Uint16Array((paddedRows(rows) * cols) / ggmlBlockSize) };
      addon.packQ4Tiles(blocks.codes, blocks.scales, rows, cols, packed.codes, packed.scales);
      return packed;
    },
    run: (x, m, w, y) => addon.q4TilesGemm(x, m, w.cols, w.codes, w.scales, w.rows, y, threads),
    slice: (w, first, rows) => sliceTiles(w, first, rows, 4),
  };
}

/**
 * The kernel of the host linears for a load's weights in `format` (`weights` says where that
 * format came from, for the refusals): `given`, else the addon's tiled kernel of their blocks.
 * f32 weights have no blocks to run.
 */
export function hostKernelFor(format: WeightFormat, weights: string, threads: number, given?: BlockKernel): BlockKernel {
  if (format === 'f32') throw new BackendError('cpu', `--cpu-gemm native runs Q8_0 or Q4_0 blocks; this load's weights are ${weights}: give --cpu-weights q8 or q4, or --cpu-gemm ort`);
  const type = blockTypeOf(format);
  const kernel = given ?? (type === 'q8_0' ? tiledQ8Kernel(threads) : tiledQ4Kernel(threads));
  if (kernel.blockType !== type) throw new BackendError('cpu', `--cpu-gemm native: ${kernel.name} runs ${kernel.blockType} blocks; this load's weights are ${weights}`);
  return kernel;
}

type LinearOp = Extract<GraphOp, { op: 'linear' }>;

/** The graph's linear ops in stacked groups (segment-graph.ts's stackedLinears), each with the graph index of its first op. */
export function linearGroups(graph: LlamaGraph): { index: number; ops: LinearOp[] }[] {
  const groups: { index: number; ops: LinearOp[] }[] = [];
  for (let i = 0; i < graph.ops.length; i++) {
    if (graph.ops[i]!.op !== 'linear') continue;
    const ops = stackedLinears(graph.ops, i);
    groups.push({ index: i, ops });
    i += ops.length - 1;
  }
  return groups;
}

/** One GEMM over the stacked rows of linears that share an input (q/k/v, gate/up), or a lone linear. */
interface LinearGroup {
  ops: LinearOp[];
  /** Each op's first row in the stacked matrix, and its row count (its output's columns). */
  firstRows: number[];
  rows: number[];
  /** The input's columns, and those padded to whole blocks (what the kernel multiplies). */
  cols: number;
  paddedCols: number;
  weight: PreparedMatrix;
  /** Each op's rows of `weight` as a matrix of its own, where the kernel can cut them out: many-row GEMMs then write each op's output in place. */
  slices: PreparedMatrix[] | null;
}

/** From this many rows a stacked group runs as one GEMM per op into each op's output (no split copies); below, one GEMM (one dispatch to the threads) and a split. */
const inPlaceMinRows = 16;

/** Where a step's activations live: the backend's run.carried and reused buffers. */
export interface LinearActivations {
  get(name: string): Float32Array;
  /** A buffer for `length` values of activation `name`, made the current one (reused across steps). */
  output(name: string, length: number): Float32Array;
  /** A scratch buffer of `length` values under `key` (reused across steps). */
  scratch(key: string, length: number): Float32Array;
}

/**
 * The graph's linear ops as host GEMMs (--cpu-gemm native): each stacked group's weights are
 * prepared once at load, and a step runs a group as one GEMM and splits its output columns
 * into the graph's separate activations.
 */
export class HostLinears {
  /** By the graph index of each group's first op. */
  private readonly groups = new Map<number, LinearGroup>();

  private constructor(private readonly kernel: BlockKernel) {}

  /**
   * Prepares every linear group of the graph, one at a time: `blocksOf` returns the stacked
   * matrices in the kernel's blocks (padded to whole blocks), valid until the next call.
   */
  static async prepare(
    graph: LlamaGraph,
    kernel: BlockKernel,
    shapeOf: (weight: string) => [rows: number, cols: number],
    blocksOf: (names: string[]) => Promise<QuantizedBlocks>,
  ): Promise<HostLinears> {
    const linears = new HostLinears(kernel);
    for (const { index, ops } of linearGroups(graph)) {
      const shapes = ops.map((op) => shapeOf(op.weight));
      const cols = shapes[0]![1];
      if (shapes.some(([, c]) => c !== cols)) throw new Error(`host linears: ${ops.map((op) => op.weight).join(', ')} differ in columns`);
      const rows = shapes.map(([r]) => r);
      const firstRows = rows.map((_, j) => rows.slice(0, j).reduce((a, b) => a + b, 0));
      const rowsTotal = rows.reduce((a, b) => a + b, 0);
      const paddedCols = Math.ceil(cols / ggmlBlockSize) * ggmlBlockSize;
      const blocks = await blocksOf(ops.map((op) => op.weight));
      const weight = kernel.prepare(blocks, rowsTotal, paddedCols);
      const slices = ops.length > 1 && kernel.slice ? ops.map((_, j) => kernel.slice!(weight, firstRows[j]!, rows[j]!)) : null;
      linears.groups.set(index, { ops, firstRows, rows, cols, paddedCols, weight, slices: slices?.every((w) => w !== null) ? (slices as PreparedMatrix[]) : null });
    }
    return linears;
  }

  /** How many graph ops the group starting at op `index` covers (a linear inside a group is not a start). */
  groupLength(index: number): number {
    const group = this.groups.get(index);
    if (!group) throw new Error(`host linears: no linear group starts at op ${index}`);
    return group.ops.length;
  }

  /** Runs the group that starts at graph op `index` over `m` rows of its input. */
  run(index: number, m: number, activations: LinearActivations): void {
    const group = this.groups.get(index);
    if (!group) throw new Error(`host linears: no linear group starts at op ${index}`);
    const { ops, cols, paddedCols, weight } = group;
    let x = activations.get(ops[0]!.x);
    if (paddedCols !== cols) x = padColumns(x, m, cols, paddedCols, activations.scratch('linear.padded', m * paddedCols));
    if (ops.length === 1) {
      this.kernel.run(x, m, weight, activations.output(ops[0]!.out, m * weight.rows));
      return;
    }
    if (group.slices && m >= inPlaceMinRows) {
      ops.forEach((op, j) => this.kernel.run(x, m, group.slices![j]!, activations.output(op.out, m * group.rows[j]!)));
      return;
    }
    const stacked = activations.scratch('linear.stacked', m * weight.rows);
    this.kernel.run(x, m, weight, stacked);
    ops.forEach((op, j) => {
      const n = group.rows[j]!;
      const first = group.firstRows[j]!;
      const out = activations.output(op.out, m * n);
      for (let r = 0; r < m; r++) out.set(stacked.subarray(r * weight.rows + first, r * weight.rows + first + n), r * n);
    });
  }
}

/** Rows of `cols` values copied into rows of `paddedCols`, zeros after: the blocks' padding multiplies zeros. */
function padColumns(x: Float32Array, m: number, cols: number, paddedCols: number, out: Float32Array): Float32Array {
  out.fill(0);
  for (let r = 0; r < m; r++) out.set(x.subarray(r * cols, (r + 1) * cols), r * paddedCols);
  return out;
}
