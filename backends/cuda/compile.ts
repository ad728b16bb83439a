import type { LlamaConfig } from '../../src/model/config.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import type { WeightSource } from '../../src/model/weights.js';
import { BackendError } from '../../src/errors.js';

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
};

export const DTYPE_F32 = 0;
export const DTYPE_BF16 = 1;

export interface CompiledActivation {
  name: string;
  perToken: boolean;
  cols: number;
  dtype: typeof DTYPE_F32 | typeof DTYPE_BF16;
}

export interface CompiledWeight {
  name: string;
  rows: number;
  cols: number;
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
 * are f32; every other activation is bf16, the GEMMs' input and output type.
 */
export function compileGraph(graph: LlamaGraph, weightShape: (name: string) => number[] | undefined): CompiledGraph {
  const f32 = new Set<string>();
  for (const op of graph.ops) {
    if (op.op === 'embedding') f32.add(op.out);
    if (op.op === 'sample') f32.add(op.logits);
  }
  for (const op of graph.ops) if (op.op === 'gather_last' && f32.has(op.x)) f32.add(op.out);

  const names = Object.keys(graph.activations);
  const activations: CompiledActivation[] = names.map((name) => ({
    name,
    perToken: graph.activations[name]!.rows === 'tokens',
    cols: graph.activations[name]!.cols,
    dtype: f32.has(name) ? DTYPE_F32 : DTYPE_BF16,
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
      weights.push({ name, rows: shape[0]!, cols: shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1 });
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
      default:
        break;
    }
  });
  return { activations, weights, ops };
}

/** [kind, a, b, c, d, layer]: a is the main input, b the weight (or k), c the output, d the second input. */
function encodeOp(op: GraphOp, buffer: (name: string) => number, weight: (name: string) => number): number[] {
  const k = opKind[op.op];
  switch (op.op) {
    case 'embedding':
      return [k, weight(op.table), -1, buffer(op.out), -1, -1];
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
    activations: Int32Array.from(compiled.activations.flatMap((a) => [a.perToken ? 1 : 0, a.cols, a.dtype])),
    ops: compiled.ops,
    weights: Int32Array.from(compiled.weights.flatMap((w) => [w.rows, w.cols])),
  };
}

export function weightShapeOf(weights: WeightSource) {
  return (name: string) => weights.info(name)?.shape;
}
