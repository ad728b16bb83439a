import { toFloat32 } from '../../src/model/dtype.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import type { WeightSource } from '../../src/model/weights.js';
import { BackendError } from '../../src/errors.js';
import type { LinearActivations } from './host-linears.js';
import type { HostAttentionBatch, LayerKernels } from './layer-kernels.js';

/** What a step hands the host ops besides its activations: shapes, rotary angles, the attention batch and caches. */
export interface HostStep {
  activations: LinearActivations;
  rowsOf(name: string): number;
  colsOf(name: string): number;
  /** gather_last's token rows. */
  headRows: Int32Array;
  /** cos and sin of each token's rotary angles, [tokens, headDim / 2]. */
  cos: Float32Array;
  sin: Float32Array;
  attention: HostAttentionBatch;
  /** Layer l's K and V caches ([numKvHeads, numSlots, headDim], f32). */
  cache(layer: number): { k: Float32Array; v: Float32Array };
}

/**
 * With --cpu-gemm native, the graph's ops between the host linears, run by a LayerKernels
 * implementation: norms, residual adds, the head's row gather, the MLP activation, and with an
 * f32 KV cache rotary and attention too (segment-graph.ts's runsOnHost says which).
 */
export class HostOps {
  private constructor(
    private readonly kernels: LayerKernels,
    private readonly weights: Map<string, Float32Array>,
    private readonly eps: number,
    private readonly headDim: number,
  ) {}

  get name(): string {
    return this.kernels.name;
  }

  /** The graph's norm weights as f32. */
  static async load(graph: LlamaGraph, source: WeightSource, shape: { rmsNormEps: number; headDim: number }, kernels: LayerKernels): Promise<HostOps> {
    const weights = new Map<string, Float32Array>();
    for (const op of graph.ops) {
      if ((op.op !== 'rmsnorm' && op.op !== 'add_rmsnorm') || weights.has(op.weight)) continue;
      const info = source.info(op.weight);
      if (!info) throw new BackendError('cpu', `${source.description}: tensor "${op.weight}" is missing`);
      weights.set(op.weight, toFloat32(await source.read(op.weight), info.dtype));
    }
    return new HostOps(kernels, weights, shape.rmsNormEps, shape.headDim);
  }

  /** Runs `op` over the step's activations if it is one of these ops (else false). */
  run(op: GraphOp, step: HostStep): boolean {
    const { activations, rowsOf, colsOf } = step;
    const output = (name: string) => activations.output(name, rowsOf(name) * colsOf(name));
    const k = this.kernels;
    switch (op.op) {
      case 'rmsnorm':
        k.rmsNorm(activations.get(op.x), this.weight(op.weight), rowsOf(op.x), colsOf(op.x), this.eps, output(op.out));
        return true;
      case 'add_rmsnorm':
        k.addRmsNorm(activations.get(op.x), activations.get(op.residual), this.weight(op.weight), rowsOf(op.x), colsOf(op.x), this.eps, output(op.out));
        return true;
      case 'add':
        k.add(activations.get(op.x), activations.get(op.y), rowsOf(op.x) * colsOf(op.x));
        return true;
      case 'silu_mul':
        k.siluMul(activations.get(op.gate), activations.get(op.up), rowsOf(op.gate) * colsOf(op.gate), output(op.out));
        return true;
      case 'rope':
        for (const name of [op.q, op.k]) k.rope(activations.get(name), rowsOf(name), colsOf(name) / this.headDim, this.headDim, step.cos, step.sin);
        return true;
      case 'attention': {
        const { k: kCache, v: vCache } = step.cache(op.layer);
        k.attention(activations.get(op.q), activations.get(op.k), activations.get(op.v), kCache, vCache, step.attention, output(op.out));
        return true;
      }
      case 'gather_last': {
        const x = activations.get(op.x);
        const cols = colsOf(op.x);
        const out = output(op.out);
        step.headRows.forEach((row, j) => out.set(x.subarray(row * cols, (row + 1) * cols), j * cols));
        return true;
      }
      default:
        return false;
    }
  }

  private weight(name: string): Float32Array {
    const weight = this.weights.get(name);
    if (!weight) throw new BackendError('cpu', `norm weight "${name}" was not loaded for the host`);
    return weight;
  }
}
