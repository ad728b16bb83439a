import { toFloat32 } from '../../src/model/dtype.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import type { WeightSource } from '../../src/model/weights.js';
import { BackendError } from '../../src/errors.js';
import { add, rmsnorm } from '../ref/ops.js';
import type { LinearActivations } from './host-linears.js';

/**
 * With --cpu-gemm native, the cheap ops between the host linears: norms, residual adds and the
 * head's row gather, in the ref backend's arithmetic (backends/ref/ops.ts), so that a
 * layer's sessions hold only rotary with attention, and the MLP activation.
 */
export class HostNorms {
  private constructor(
    private readonly weights: Map<string, Float32Array>,
    private readonly eps: number,
  ) {}

  /** The graph's norm weights as f32. */
  static async load(graph: LlamaGraph, source: WeightSource, eps: number): Promise<HostNorms> {
    const weights = new Map<string, Float32Array>();
    for (const op of graph.ops) {
      if ((op.op !== 'rmsnorm' && op.op !== 'add_rmsnorm') || weights.has(op.weight)) continue;
      const info = source.info(op.weight);
      if (!info) throw new BackendError('cpu', `${source.description}: tensor "${op.weight}" is missing`);
      weights.set(op.weight, toFloat32(await source.read(op.weight), info.dtype));
    }
    return new HostNorms(weights, eps);
  }

  /**
   * Runs `op` over the step's activations if it is one of these ops (else false). `rowsOf` and
   * `colsOf` give an activation's shape; `headRows` are gather_last's token rows.
   */
  run(op: GraphOp, activations: LinearActivations, rowsOf: (name: string) => number, colsOf: (name: string) => number, headRows: Int32Array): boolean {
    const output = (name: string) => activations.output(name, rowsOf(name) * colsOf(name));
    switch (op.op) {
      case 'rmsnorm':
      case 'add_rmsnorm': {
        const x = activations.get(op.x);
        if (op.op === 'add_rmsnorm') add(x, activations.get(op.residual), x.length);
        const weight = this.weights.get(op.weight);
        if (!weight) throw new BackendError('cpu', `norm weight "${op.weight}" was not loaded for the host`);
        rmsnorm(x, weight, rowsOf(op.x), this.eps, output(op.out));
        return true;
      }
      case 'add': {
        const x = activations.get(op.x);
        add(x, activations.get(op.y), x.length);
        return true;
      }
      case 'gather_last': {
        const x = activations.get(op.x);
        const cols = colsOf(op.x);
        const out = output(op.out);
        headRows.forEach((row, j) => out.set(x.subarray(row * cols, (row + 1) * cols), j * cols));
        return true;
      }
      default:
        return false;
    }
  }
}
