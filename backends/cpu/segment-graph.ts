import type { LlamaConfig } from '../../src/model/config.js';
import { toFloat32 } from '../../src/model/dtype.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import type { WeightSource } from '../../src/model/weights.js';
import { fp8Table, type Fp8Format } from './fp8-codes.js';
import type { QuantizedBlocks } from './ggml-blocks.js';
import { addBlocksLinear, addLinear, stackRows, type RawMatrix, type WeightFormat } from './linear-weights.js';
import { DataType, OnnxGraphBuilder, type EncodedModel } from './onnx-builder.js';

/**
 * A run of graph ops compiled into one ORT session: whole decoder layers on one rank; on a
 * tensor-parallel rank, the ops between two collectives (which run on the host between sessions).
 */
export interface Segment {
  /** The graph ops [startOp, endOp) the session computes. */
  startOp: number;
  endOp: number;
  /** The decoder layers whose attention runs here, [firstLayer, endLayer): the KV caches it reads. */
  firstLayer: number;
  endLayer: number;
  /** The session holds the sample op: it outputs the logits and their argmax. */
  withHead: boolean;
}

/**
 * Which graph ops a load runs on the host rather than in ORT sessions (each session run costs
 * ~0.3 ms, and ORT's threads sleep between runs while the host's work):
 * - `collectives` (--cpu-gemm ort): the embedding (a lookup) and a rank's collectives (between
 *   rank threads, over shared memory);
 * - `linears` (--cpu-gemm native with an 8- or 4-bit KV cache): also the linear ops
 *   (host-linears.ts) and the ops between them (host-ops.ts), all but rotary with attention,
 *   which read the cache's codes inside a session;
 * - `layers` (--cpu-gemm native, f32 KV cache): every op; no sessions at all.
 */
export type HostPlacement = 'collectives' | 'linears' | 'layers';

export function runsOnHost(op: GraphOp, placement: HostPlacement = 'collectives'): boolean {
  if (op.op === 'embedding' || op.op === 'all_reduce' || op.op === 'all_gather') return true;
  if (placement === 'collectives') return false;
  return placement === 'layers' || (op.op !== 'rope' && op.op !== 'attention' && op.op !== 'sample');
}

/**
 * The step's inputs that every segment shares. Attention runs in two groups so that a long
 * prefill chunk does not pad every decode sequence to its length: group `d` holds the sequences
 * with one new token, group `p` the others (see attention-plan.ts for their layout).
 */
export const stepInputs = {
  cos: 'rope_cos',
  sin: 'rope_sin',
  outIndex: 'attn_out_index',
  /** The token rows the lm-head runs on: each sequence's last, then any prompt rows whose log-probs are asked. */
  lastIndex: 'last_index',
  group: (g: AttentionGroupName) => ({
    queryIndex: `${g}_query_index`,
    pastIndex: `${g}_past_index`,
    mask: `${g}_mask`,
    keySplit: `${g}_key_split`,
  }),
  kCache: (layer: number) => `k_cache_${layer}`,
  vCache: (layer: number) => `v_cache_${layer}`,
  /** q8_0 and q4_0 caches: one scale per block of `kvBlockSize` values, [kvHeads, slots, headDim / block]. */
  kScales: (layer: number) => `k_scales_${layer}`,
  vScales: (layer: number) => `v_scales_${layer}`,
  /** A graph activation handed over from the host (the embedding, a collective's result) or the previous segment. */
  carried: (activation: string) => `carried_${activation}`,
} as const;

export const stepOutputs = {
  logits: 'logits',
  /** Argmax of each logits row (lowest id on ties): all a greedy step without log-probs needs. */
  greedy: 'greedy_tokens',
  k: (layer: number) => `k_new_${layer}`,
  v: (layer: number) => `v_new_${layer}`,
  /** A graph activation that the next segment reads. */
  carried: (activation: string) => `carried_${activation}_out`,
} as const;

export type AttentionGroupName = 'd' | 'p';

/**
 * How the cpu backend stores K and V: f32, FP8 codes, or codes with a scale per block: llama.cpp's
 * q8_0 (int8) and q4_0 (4-bit codes around 8, two a byte: byte j of a block holds element j in
 * its low nibble and element j + block / 2 in its high one, ggml's Q4_0 order).
 */
export type KvCacheFormat = 'f32' | Fp8Format | 'q8_0' | 'q4_0';

/** Whether a cache format stores blocks with a scale each. */
export function kvHasScales(format: KvCacheFormat): format is 'q8_0' | 'q4_0' {
  return format === 'q8_0' || format === 'q4_0';
}

/** Bytes per cached value: codes, plus a block's f32 scale shared by its values. */
export function kvBytesPerValue(format: KvCacheFormat, headDim: number): number {
  const scale = kvHasScales(format) ? 4 / kvBlockSize(headDim) : 0;
  return { f32: 4, fp8_e4m3: 1, fp8_e5m2: 1, q8_0: 1, q4_0: 0.5 }[format] + scale;
}

/** Values per q8_0 / q4_0 KV block: 32 as in ggml, or the whole head when it is shorter. */
export function kvBlockSize(headDim: number): number {
  return Math.min(32, headDim);
}
export const attentionGroups: AttentionGroupName[] = ['d', 'p'];

/** A segment's run of graph ops and the activations that cross its boundaries. */
export interface SegmentOps {
  ops: GraphOp[];
  /** Activations read here before they are written here: written earlier in the step. */
  carriedIn: string[];
  /** Activations written here that a later op reads. What a segment does not write stays with the host between runs. */
  carriedOut: string[];
}

/** The segment's ops and the activations that cross its boundaries. */
export function segmentOps(graph: LlamaGraph, segment: Segment): SegmentOps {
  const { startOp: start, endOp: end } = segment;
  const ops = graph.ops.slice(start, end);
  const written = new Set(ops.flatMap(opWrites));
  const liveAfter = end === graph.ops.length ? [] : liveBefore(graph.ops, end);
  return { ops, carriedIn: liveBefore(ops, 0), carriedOut: liveAfter.filter((name) => written.has(name)) };
}

type LinearOp = Extract<GraphOp, { op: 'linear' }>;

/** The linear at ops[i] and those right after it that read the same input: one GEMM over their stacked rows (q/k/v, gate/up). */
export function stackedLinears(ops: GraphOp[], i: number): LinearOp[] {
  const op = ops[i] as LinearOp;
  const group = [op];
  for (let next = ops[i + 1]; next?.op === 'linear' && next.x === op.x && group.every((g) => g.out !== op.x); next = ops[i + group.length]) {
    group.push(next);
  }
  return group;
}

/** The weight names of each stacked GEMM of a segment, in the order buildSegmentModel asks for their blocks. */
export function segmentLinearGroups(graph: LlamaGraph, segment: Segment): string[][] {
  const { ops } = segmentOps(graph, segment);
  const groups: string[][] = [];
  for (let i = 0; i < ops.length; i++) {
    if (ops[i]!.op !== 'linear') continue;
    const group = stackedLinears(ops, i);
    groups.push(group.map((g) => g.weight));
    i += group.length - 1;
  }
  return groups;
}

/** The activations that ops from `index` on read before writing them. */
function liveBefore(ops: GraphOp[], index: number): string[] {
  const written = new Set<string>();
  const live = new Set<string>();
  for (const op of ops.slice(index)) {
    for (const name of opReads(op)) if (!written.has(name)) live.add(name);
    for (const name of opWrites(op)) written.add(name);
  }
  return [...live];
}

/** The activations an op reads (in-place operands included). */
export function opReads(op: GraphOp): string[] {
  switch (op.op) {
    case 'embedding':
      return [];
    case 'rmsnorm':
    case 'linear':
    case 'gather_last':
    case 'all_reduce':
    case 'all_gather':
      return [op.x];
    case 'add_rmsnorm':
      return [op.x, op.residual];
    case 'rope':
      return [op.q, op.k];
    case 'attention':
      return [op.q, op.k, op.v];
    case 'silu_mul':
      return [op.gate, op.up];
    case 'add':
      return [op.x, op.y];
    case 'sample':
      return [op.logits];
  }
}

/** The activations an op writes (in-place operands included). */
export function opWrites(op: GraphOp): string[] {
  switch (op.op) {
    case 'embedding':
    case 'rmsnorm':
    case 'linear':
    case 'attention':
    case 'silu_mul':
    case 'gather_last':
    case 'all_gather':
      return [op.out];
    case 'all_reduce':
      return [op.x];
    case 'add_rmsnorm':
      return [op.x, op.out];
    case 'rope':
      return [op.q, op.k];
    case 'add':
      return [op.x];
    case 'sample':
      return [];
  }
}

/**
 * Builds one segment as an ONNX model by translating its graph ops, reading weights one matrix
 * at a time. Consecutive linear ops over the same input (q/k/v, gate/up) become one GEMM. The
 * weights are not serialized: the model's initializers point into the buffers they were made in
 * (EncodedModel.externalData).
 */
export async function buildSegmentModel(
  config: LlamaConfig,
  graph: LlamaGraph,
  weights: WeightSource,
  segment: Segment,
  format: WeightFormat,
  /**
   * Matrices in `format`'s blocks, stacked along their rows in the order given (required unless
   * format is f32): the backend quantizes on worker threads.
   */
  blocksOf?: (names: string[]) => Promise<QuantizedBlocks>,
  /** The KV cache's element type: f32, or one byte per value in an FP8 format (fp8-codes.ts). */
  kvCache: KvCacheFormat = 'f32',
): Promise<EncodedModel> {
  const { headDim: hd } = config;
  const b = new OnnxGraphBuilder();
  const { ops, carriedIn, carriedOut } = segmentOps(graph, segment);
  const cols = (activation: string) => graph.activations[activation]!.cols;
  const rows = (activation: string) => (graph.activations[activation]!.rows === 'tokens' ? 'T' : 'S');
  /** The ONNX value currently holding each graph activation. */
  const env = new Map<string, string>();
  const value = (activation: string) => env.get(activation)!;
  for (const name of carriedIn) env.set(name, b.input(stepInputs.carried(name), DataType.FLOAT, [rows(name), cols(name)]));

  const matrix = async (name: string): Promise<RawMatrix> => {
    const info = weights.info(name);
    if (!info) throw new Error(`${weights.description}: tensor "${name}" is missing`);
    return { bytes: await weights.read(name), dtype: info.dtype, rows: info.shape[0]!, cols: info.shape[1]! };
  };
  const vector = async (name: string): Promise<string> => {
    const info = weights.info(name);
    if (!info) throw new Error(`${weights.description}: tensor "${name}" is missing`);
    return b.initializer(name, DataType.FLOAT, [info.shape[0]!], toFloat32(await weights.read(name), info.dtype));
  };
  const eps = { float: config.rmsNormEps };

  const rotary = once(() => {
    const cos = b.input(stepInputs.cos, DataType.FLOAT, ['T', hd / 2]);
    const sin = b.input(stepInputs.sin, DataType.FLOAT, ['T', hd / 2]);
    return { cos: b.op('Unsqueeze', [cos, b.int64s([1])]), sin: b.op('Unsqueeze', [sin, b.int64s([1])]), halves: b.int64s([hd / 2, hd / 2]) };
  });
  const rope = (t: string, heads: number): string => {
    const { cos, sin, halves } = rotary();
    const perHead = b.op('Reshape', [t, b.int64s([0, heads, hd])]);
    const [a, c] = b.node('Split', [perHead, halves], { axis: 2 }, 2);
    const rotatedA = b.op('Sub', [b.op('Mul', [a!, cos]), b.op('Mul', [c!, sin])]);
    const rotatedC = b.op('Add', [b.op('Mul', [c!, cos]), b.op('Mul', [a!, sin])]);
    return b.op('Reshape', [b.op('Concat', [rotatedA, rotatedC], { axis: 2 }), b.int64s([0, heads * hd])]);
  };
  const attention = pagedAttention(b, config, kvCache);

  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    switch (op.op) {
      case 'embedding':
      case 'all_reduce':
      case 'all_gather':
        throw new Error(`buildSegmentModel: the ${op.op} op runs on the host, not in a segment`);
      case 'rmsnorm':
        env.set(op.out, b.op('SimplifiedLayerNormalization', [value(op.x), await vector(op.weight)], { axis: -1, epsilon: eps, stash_type: 1 }));
        break;
      case 'add_rmsnorm': {
        const skip = [value(op.x), value(op.residual), await vector(op.weight)];
        const [normed, , , sum] = b.node('SkipSimplifiedLayerNormalization', skip, { epsilon: eps }, 4, 'com.microsoft');
        env.set(op.x, sum!);
        env.set(op.out, normed!);
        break;
      }
      case 'linear': {
        const group = stackedLinears(ops, i);
        i += group.length - 1;
        const name = group.map((g) => g.weight).join('+');
        const shapes = group.map((g) => weights.info(g.weight)?.shape ?? []);
        let out: string;
        if (format === 'f32') {
          const parts = [];
          for (const g of group) parts.push(await matrix(g.weight));
          out = addLinear(b, value(op.x), parts.length === 1 ? parts[0]! : stackRows(parts), format, name);
        } else {
          if (!blocksOf) throw new Error(`buildSegmentModel: ${format} weights need a block source`);
          for (const g of group) if (!weights.info(g.weight)) throw new Error(`${weights.description}: tensor "${g.weight}" is missing`);
          const rowsTotal = shapes.reduce((n, shape) => n + shape[0]!, 0);
          out = addBlocksLinear(b, value(op.x), await blocksOf(group.map((g) => g.weight)), rowsTotal, shapes[0]![1]!, format, name);
        }
        if (group.length === 1) env.set(op.out, out);
        else b.node('Split', [out, b.int64s(shapes.map((shape) => shape[0]!))], { axis: 1 }, group.map((g) => `${g.out}_${i}`)).forEach((v, j) => env.set(group[j]!.out, v));
        break;
      }
      case 'rope':
        env.set(op.q, rope(value(op.q), cols(op.q) / hd));
        env.set(op.k, rope(value(op.k), cols(op.k) / hd));
        break;
      case 'attention':
        env.set(op.out, attention(op.layer, value(op.q), value(op.k), value(op.v), cols(op.k)));
        break;
      case 'silu_mul': {
        const gate = value(op.gate);
        env.set(op.out, b.op('Mul', [b.op('Mul', [gate, b.op('Sigmoid', [gate])]), value(op.up)]));
        break;
      }
      case 'add':
        env.set(op.x, b.op('Add', [value(op.x), value(op.y)]));
        break;
      case 'gather_last': {
        const lastIndex = b.input(stepInputs.lastIndex, DataType.INT32, ['S']);
        env.set(op.out, b.op('Gather', [value(op.x), lastIndex], { axis: 0 }));
        break;
      }
      case 'sample': {
        const logits = value(op.logits);
        b.node('Identity', [logits], {}, [stepOutputs.logits]);
        b.output(stepOutputs.logits, DataType.FLOAT, ['S', cols(op.logits)]);
        b.node('ArgMax', [logits], { axis: 1, keepdims: 0, select_last_index: 0 }, [stepOutputs.greedy]);
        b.output(stepOutputs.greedy, DataType.INT64, ['S']);
        break;
      }
    }
  }
  for (const name of carriedOut) {
    b.node('Identity', [value(name)], {}, [stepOutputs.carried(name)]);
    b.output(stepOutputs.carried(name), DataType.FLOAT, [rows(name), cols(name)]);
  }
  return b.encode();
}

/**
 * The attention op: returns the layer's new K and V as step outputs (the host writes them to
 * their cache slots) and attends each group's queries over keys gathered from the paged cache.
 */
function pagedAttention(b: OnnxGraphBuilder, config: LlamaConfig, kvCache: KvCacheFormat) {
  const { numHeads, numKvHeads, headDim: hd } = config;
  // Codes are gathered as bytes (a quarter or an eighth of f32's traffic), then decoded: FP8
  // through a 256-entry table, q8_0 by a cast and its blocks' scales, q4_0 by splitting each byte
  // into its two codes first, then as q8_0 around 8.
  const codeTable = once(() => (kvCache === 'f32' || kvHasScales(kvCache) ? '' : b.initializer(`kv_${kvCache}_table`, DataType.FLOAT, [256], fp8Table(kvCache))));
  const block = kvBlockSize(hd);
  const gatherPast = (cache: string, scales: string | null, pastIndex: string) => {
    const past = b.op('Gather', [cache, pastIndex], { axis: 1 }); // [kvH, S, P, hd] (q4_0: hd / 2 bytes)
    if (kvCache === 'f32') return past;
    if (kvHasScales(kvCache)) {
      let codes = b.op('Reshape', [past, b.int64s([0, 0, 0, -1, kvCache === 'q4_0' ? block / 2 : block])]); // [kvH, S, P, hd / block, bytes a block]
      // q4_0: the two codes of each byte, split while still bytes (a quarter of the f32 passes).
      if (kvCache === 'q4_0') codes = b.op('Concat', [b.op('Mod', [codes, b.uint8s([16])]), b.op('BitShift', [codes, b.uint8s([4])], { direction: 'RIGHT' })], { axis: 4 });
      let values = b.op('Cast', [codes], { to: DataType.FLOAT }); // [kvH, S, P, hd / block, block]
      if (kvCache === 'q4_0') values = b.op('Sub', [values, b.floats([8])]);
      const blockScales = b.op('Unsqueeze', [b.op('Gather', [scales!, pastIndex], { axis: 1 }), b.int64s([4])]);
      return b.op('Reshape', [b.op('Mul', [values, blockScales]), b.int64s([0, 0, 0, hd])]);
    }
    return b.op('Gather', [codeTable(), b.op('Cast', [past], { to: DataType.INT32 })], { axis: 0 });
  };
  const groups = once(() => {
    const outIndex = b.input(stepInputs.outIndex, DataType.INT32, ['T']);
    const perGroup = attentionGroups.map((g) => {
      const names = stepInputs.group(g);
      return {
        queryIndex: b.input(names.queryIndex, DataType.INT32, [`S${g}`, `Q${g}`]),
        pastIndex: b.input(names.pastIndex, DataType.INT32, [`S${g}`, `P${g}`]),
        mask: b.input(names.mask, DataType.FLOAT, [1, `S${g}`, `GQ${g}`, `L${g}`]),
        keySplit: b.input(names.keySplit, DataType.INT64, [2]),
      };
    });
    return { outIndex, perGroup };
  });
  const group = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(hd);
  /** [T, kvH*hd] -> [kvH, T, hd]: the layout of the cache, so keys need no transpose after gathering. */
  const headMajor = (t: string) => b.op('Transpose', [b.op('Reshape', [t, b.int64s([0, numKvHeads, hd])])], { perm: [1, 0, 2] });
  type Group = ReturnType<typeof groups>['perGroup'][number];
  type Cache = { values: string; scales: string | null };
  const attentionInGroup = (g: Group, q: string, kHeads: string, vHeads: string, kCache: Cache, vCache: Cache) => {
    let qg = b.op('Gather', [q, g.queryIndex], { axis: 0 }); // [S, Q, H*hd]
    qg = b.op('Reshape', [qg, b.int64s([0, 0, numKvHeads, group, hd])]);
    qg = b.op('Transpose', [qg], { perm: [2, 0, 3, 1, 4] }); // [kvH, S, G, Q, hd]
    qg = b.op('Reshape', [qg, b.int64s([0, 0, -1, hd])]); // [kvH, S, G*Q, hd]
    const kPast = gatherPast(kCache.values, kCache.scales, g.pastIndex);
    const vPast = gatherPast(vCache.values, vCache.scales, g.pastIndex);
    const kNew = b.op('Gather', [kHeads, g.queryIndex], { axis: 1 }); // [kvH, S, Q, hd]
    const vNew = b.op('Gather', [vHeads, g.queryIndex], { axis: 1 });
    // Scores against past and new keys side by side (small), rather than concatenating the keys (large).
    const scoresOf = (keys: string) => b.op('FusedMatMul', [qg, keys], { transB: 1, alpha: { float: scale } }, 'com.microsoft');
    const scores = b.op('Add', [b.op('Concat', [scoresOf(kPast), scoresOf(kNew)], { axis: 3 }), g.mask]); // [kvH, S, G*Q, P+Q]
    const [pPast, pNew] = b.node('Split', [b.op('Softmax', [scores], { axis: -1 }), g.keySplit], { axis: 3 }, 2);
    let o = b.op('Add', [b.op('MatMul', [pPast!, vPast]), b.op('MatMul', [pNew!, vNew])]); // [kvH, S, G*Q, hd]
    o = b.op('Reshape', [o, b.int64s([0, 0, group, -1, hd])]);
    o = b.op('Transpose', [o], { perm: [1, 3, 0, 2, 4] }); // [S, Q, kvH, G, hd]
    return b.op('Reshape', [o, b.int64s([-1, numHeads * hd])]);
  };
  return (layer: number, q: string, k: string, v: string, kvCols: number): string => {
    const { outIndex, perGroup } = groups();
    b.node('Identity', [k], {}, [stepOutputs.k(layer)]);
    b.node('Identity', [v], {}, [stepOutputs.v(layer)]);
    b.output(stepOutputs.k(layer), DataType.FLOAT, ['T', kvCols]);
    b.output(stepOutputs.v(layer), DataType.FLOAT, ['T', kvCols]);
    const cacheType = kvCache === 'f32' ? DataType.FLOAT : kvCache === 'q8_0' ? DataType.INT8 : DataType.UINT8;
    const cacheCols = kvCache === 'q4_0' ? hd / 2 : hd;
    const scalesOf = (name: string) => (kvHasScales(kvCache) ? b.input(name, DataType.FLOAT, [numKvHeads, 'N', hd / block]) : null);
    const kCache = { values: b.input(stepInputs.kCache(layer), cacheType, [numKvHeads, 'N', cacheCols]), scales: scalesOf(stepInputs.kScales(layer)) };
    const vCache = { values: b.input(stepInputs.vCache(layer), cacheType, [numKvHeads, 'N', cacheCols]), scales: scalesOf(stepInputs.vScales(layer)) };
    const kHeads = headMajor(k);
    const vHeads = headMajor(v);
    const results = perGroup.map((g) => attentionInGroup(g, q, kHeads, vHeads, kCache, vCache));
    return b.op('Gather', [b.op('Concat', results, { axis: 0 }), outIndex], { axis: 0 });
  };
}

function once<T>(make: () => T): () => T {
  let made: T | undefined;
  return () => (made ??= make());
}
