import type { LlamaConfig } from '../../src/model/config.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import type { WeightSource } from '../../src/model/weights.js';
import { BackendError } from '../../src/errors.js';
import { splitRange } from '../../src/model/shard.js';

/** Op kinds as native/src/model.h numbers them. */
export const opKind: Record<GraphOp['op'], number> = {
  embedding: 0,
  rmsnorm: 1,
  add_rmsnorm: 2,
  linear: 3,
  rope: 4,
  attention: 5,
  silu_mul: 6,
  add: 7,
  gather_last: 8,
  sample: 9,
  all_reduce: 10,
  all_gather: 11,
};

export const DTYPE_F32 = 0;
export const DTYPE_BF16 = 1;

export interface CompiledActivation {
  name: string;
  perToken: boolean;
  cols: number;
  dtype: typeof DTYPE_F32 | typeof DTYPE_BF16;
  /** A column slice of another activation's rows (a fused GEMM's output): its id and first column. */
  viewOf: number;
  colOffset: number;
}

export interface CompiledWeight {
  name: string;
  rows: number;
  cols: number;
  /** A fused weight: these checkpoint tensors stacked along the rows, in order. */
  parts?: { name: string; rows: number }[];
}

export interface CompileOptions {
  /**
   * One GEMM for each run of linears over the same input (q/k/v, gate/up): their weights are
   * concatenated at load and their outputs become column views of one buffer, which rope,
   * attention and silu_mul read with a row stride. SLUICE_CUDA_FUSE=0 turns it off.
   */
  fuseProjections?: boolean;
}

/** The graph as the addon takes it: numbered buffers and weights, six ints per op. */
export interface CompiledGraph {
  activations: CompiledActivation[];
  weights: CompiledWeight[];
  /** kind, a, b, c, d, layer per op; operand roles per kind are listed in encodeOp. */
  ops: Int32Array;
}

/**
 * Chooses each activation's storage and numbers everything. The residual stream (what the
 * embedding writes and add / add_rmsnorm accumulate into), its gathered last rows and the logits
 * (on a tensor-parallel rank, its part of them too) are f32; every other activation is bf16, the
 * GEMMs' input and output type. all_reduce sums in its buffer's type (bf16 after o_proj and
 * down_proj, as vLLM and SGLang reduce in the model's dtype).
 */
export function compileGraph(graph: LlamaGraph, weightShape: (name: string) => number[] | undefined, options: CompileOptions = {}): CompiledGraph {
  const fused = options.fuseProjections ? fuseProjections(graph, weightShape) : null;
  if (fused) {
    graph = fused.graph;
    const partsOf = fused.parts;
    const baseShape = weightShape;
    weightShape = (name) => {
      const parts = partsOf.get(name);
      if (!parts) return baseShape(name);
      const shapes = parts.map((p) => baseShape(p));
      if (shapes.some((s) => !s)) return undefined;
      return [shapes.reduce((a, s) => a + s![0]!, 0), ...shapes[0]!.slice(1)];
    };
  }
  const f32 = new Set<string>();
  for (const op of graph.ops) {
    if (op.op === 'embedding') f32.add(op.out);
    if (op.op === 'sample') f32.add(op.logits);
  }
  for (const op of graph.ops) if (op.op === 'gather_last' && f32.has(op.x)) f32.add(op.out);
  // A rank's partial logits travel and are gathered as f32, like the logits they become.
  for (const op of graph.ops) if (op.op === 'all_gather' && f32.has(op.out)) f32.add(op.x);

  const names = Object.keys(graph.activations);
  const activations: CompiledActivation[] = names.map((name) => ({
    name,
    perToken: graph.activations[name]!.rows === 'tokens',
    cols: graph.activations[name]!.cols,
    dtype: f32.has(name) ? DTYPE_F32 : DTYPE_BF16,
    viewOf: fused?.views.has(name) ? names.indexOf(fused.views.get(name)!.of) : -1,
    colOffset: fused?.views.get(name)?.colOffset ?? 0,
  }));
  const bufferId = (name: string): number => {
    const id = names.indexOf(name);
    if (id < 0) throw new BackendError('cuda', `graph op refers to an unknown activation "${name}"`);
    return id;
  };
  const weights: CompiledWeight[] = [];
  const weightIds = new Map<string, number>();
  const weightId = (name: string): number => {
    let id = weightIds.get(name);
    if (id === undefined) {
      const shape = weightShape(name);
      if (!shape) throw new BackendError('cuda', `graph op needs weight "${name}", which the model does not have`);
      id = weights.length;
      const parts = fused?.parts.get(name)?.map((part) => ({ name: part, rows: weightShape(part)![0]! }));
      weights.push({ name, rows: shape[0]!, cols: shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1, ...(parts ? { parts } : {}) });
      weightIds.set(name, id);
    }
    return id;
  };
  const dtypeOf = (name: string) => activations[bufferId(name)]!.dtype;
  const expect = (cond: boolean, what: string) => {
    if (!cond) throw new BackendError('cuda', `cannot run this graph: ${what}`);
  };

  const ops = new Int32Array(graph.ops.length * 6);
  graph.ops.forEach((op, i) => {
    const row = encodeOp(op, bufferId, weightId);
    ops.set(row, i * 6);
    switch (op.op) {
      case 'add_rmsnorm':
      case 'add': {
        const residual = op.op === 'add' ? op.y : op.residual;
        expect(dtypeOf(op.x) === DTYPE_F32, `${op.op} accumulates into "${op.x}", which is not the residual stream`);
        expect(dtypeOf(residual) === DTYPE_BF16, `${op.op} adds "${residual}", which must be a bf16 activation`);
        break;
      }
      case 'linear':
        expect(dtypeOf(op.x) === DTYPE_BF16, `linear reads "${op.x}", which must be bf16`);
        expect(weights[row[2]!]!.cols === activations[row[1]!]!.cols, `linear ${op.weight}: inner dimension mismatch`);
        expect(weights[row[2]!]!.rows === activations[row[3]!]!.cols, `linear ${op.weight}: output dimension mismatch`);
        break;
      case 'sample':
        expect(!activations[row[1]!]!.perToken, 'sample reads a per-sequence buffer');
        break;
      case 'all_gather': {
        // The addon lays the parts out by the even split (native/src/tensor_parallel.h), as shard.ts makes them.
        const cols = graph.activations[op.out]!.cols;
        const even = op.parts.every((p, r) => {
          const [start, end] = splitRange(cols, op.parts.length, r);
          return p === end - start;
        });
        expect(even, `all_gather into "${op.out}" must split its ${cols} columns evenly over ${op.parts.length} ranks (src/model/shard.ts's splitRange)`);
        expect(dtypeOf(op.out) === DTYPE_F32, `all_gather writes "${op.out}", which must be the f32 logits`);
        break;
      }
      case 'embedding':
        if (op.vocabStart !== undefined) expect(Number.isInteger(op.vocabStart) && op.vocabStart >= 0, 'embedding vocabStart must be a whole number >= 0');
        break;
      default:
        break;
    }
  });
  return { activations, weights, ops };
}

/** Operands that may be column views: the kernels behind them take a row stride. */
const stridedOperands: Partial<Record<GraphOp['op'], string[]>> = { rope: ['q', 'k'], attention: ['q', 'k', 'v'], silu_mul: ['gate', 'up'] };

/**
 * Each run of consecutive linears over the same input becomes one linear whose weight is the
 * parts stacked along the rows, writing a new activation the parts' outputs are column views of.
 * Returns null (compile unfused) when a view would reach an op that cannot take a row stride.
 */
function fuseProjections(graph: LlamaGraph, weightShape: (name: string) => number[] | undefined) {
  const ops: GraphOp[] = [];
  const activations = { ...graph.activations };
  const views = new Map<string, { of: string; colOffset: number }>();
  const parts = new Map<string, string[]>();
  type Linear = Extract<GraphOp, { op: 'linear' }>;
  for (let i = 0; i < graph.ops.length; ) {
    const op = graph.ops[i]!;
    if (op.op !== 'linear') {
      ops.push(op);
      i++;
      continue;
    }
    let j = i + 1;
    while (j < graph.ops.length && graph.ops[j]!.op === 'linear' && (graph.ops[j] as Linear).x === op.x) j++;
    const run = graph.ops.slice(i, j) as Linear[];
    const outs = run.map((r) => r.out);
    const sameRows = run.every((r) => activations[r.out]?.rows === activations[op.x]?.rows && weightShape(r.weight)?.[1] === weightShape(op.weight)?.[1]);
    if (run.length < 2 || !sameRows || new Set(outs).size !== outs.length || outs.includes(op.x)) {
      ops.push(...run);
      i = j;
      continue;
    }
    const out = outs.join('+');
    const weight = `fused(${run.map((r) => r.weight).join('+')})`;
    let colOffset = 0;
    for (const r of run) {
      const previous = views.get(r.out);
      if (previous && (previous.of !== out || previous.colOffset !== colOffset)) return null;
      views.set(r.out, { of: out, colOffset });
      colOffset += activations[r.out]!.cols;
    }
    activations[out] = { rows: activations[op.x]!.rows, cols: colOffset };
    parts.set(weight, run.map((r) => r.weight));
    ops.push({ op: 'linear', x: op.x, weight, out });
    i = j;
  }
  for (const op of ops) {
    const allowed = new Set((stridedOperands[op.op] ?? []).map((k) => (op as Record<string, unknown>)[k] as string));
    for (const [key, value] of Object.entries(op)) {
      if (key === 'op' || typeof value !== 'string' || !views.has(value)) continue;
      if (!allowed.has(value)) return null;
    }
  }
  return { graph: { ...graph, activations, ops }, views, parts };
}

/** [kind, a, b, c, d, layer]: a is the main input, b the weight (or k), c the output, d the second input. */
function encodeOp(op: GraphOp, buffer: (name: string) => number, weight: (name: string) => number): number[] {
  const k = opKind[op.op];
  switch (op.op) {
    case 'embedding':
      // d: a rank's first vocabulary id (its slice of the table); -1 the whole table.
      return [k, weight(op.table), -1, buffer(op.out), op.vocabStart ?? -1, -1];
    case 'rmsnorm':
      return [k, buffer(op.x), weight(op.weight), buffer(op.out), -1, -1];
    case 'add_rmsnorm':
      return [k, buffer(op.x), weight(op.weight), buffer(op.out), buffer(op.residual), -1];
    case 'linear':
      return [k, buffer(op.x), weight(op.weight), buffer(op.out), -1, -1];
    case 'rope':
      return [k, buffer(op.q), -1, -1, buffer(op.k), -1];
    case 'attention':
      return [k, buffer(op.q), buffer(op.k), buffer(op.out), buffer(op.v), op.layer];
    case 'silu_mul':
      return [k, buffer(op.gate), -1, buffer(op.out), buffer(op.up), -1];
    case 'add':
      return [k, buffer(op.x), -1, -1, buffer(op.y), -1];
    case 'gather_last':
      return [k, buffer(op.x), -1, buffer(op.out), -1, -1];
    case 'sample':
      return [k, buffer(op.logits), -1, -1, -1, -1];
    case 'all_reduce':
      return [k, buffer(op.x), -1, buffer(op.x), -1, -1];
    case 'all_gather':
      return [k, buffer(op.x), -1, buffer(op.out), -1, -1];
  }
}

/** The addon's configure() argument for a model and its compiled graph. */
export function nativeConfig(config: LlamaConfig, compiled: CompiledGraph, invFreq: Float64Array) {
  return {
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    numLayers: config.numLayers,
    numHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    vocabSize: config.vocabSize,
    rmsNormEps: config.rmsNormEps,
    invFreq,
    activations: Int32Array.from(compiled.activations.flatMap((a) => [a.perToken ? 1 : 0, a.cols, a.dtype, a.viewOf, a.colOffset])),
    ops: compiled.ops,
    weights: Int32Array.from(compiled.weights.flatMap((w) => [w.rows, w.cols])),
  };
}

export function weightShapeOf(weights: WeightSource) {
  return (name: string) => weights.info(name)?.shape;
}
