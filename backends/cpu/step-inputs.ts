import type * as Ort from 'onnxruntime-node';
import type { ForwardBatch } from '../../src/engine/backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { planAttention } from './attention-plan.js';
import { attentionGroups, stepInputs } from './segment-graph.js';

/** cos and sin of position * invFreq[i], [T, headDim / 2], computed in f64 as the reference does. */
export function rotaryTables(positions: Int32Array, invFreq: Float64Array): [Float32Array, Float32Array] {
  const half = invFreq.length;
  const cos = new Float32Array(positions.length * half);
  const sin = new Float32Array(positions.length * half);
  positions.forEach((p, t) => {
    for (let i = 0; i < half; i++) {
      const angle = p * invFreq[i]!;
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  });
  return [cos, sin];
}

/** The inputs every session of a step reads: the rotary angles, and attention's gathered layout (attention-plan.ts). */
export function sessionStepInputs(Tensor: typeof Ort.Tensor, batch: ForwardBatch, cos: Float32Array, sin: Float32Array, config: LlamaConfig, pageSize: number): Record<string, Ort.Tensor> {
  const numTokens = batch.tokenIds.length;
  const half = config.headDim / 2;
  const plan = planAttention(batch, pageSize, config.numHeads / config.numKvHeads);
  const inputs: Record<string, Ort.Tensor> = {
    [stepInputs.cos]: new Tensor('float32', cos, [numTokens, half]),
    [stepInputs.sin]: new Tensor('float32', sin, [numTokens, half]),
    [stepInputs.outIndex]: new Tensor('int32', plan.outIndex, [numTokens]),
  };
  for (const name of attentionGroups) {
    const g = plan.groups[name];
    const names = stepInputs.group(name);
    const keys = g.pastLen + g.queryLen;
    inputs[names.queryIndex] = new Tensor('int32', g.queryIndex, [g.numSeqs, g.queryLen]);
    inputs[names.pastIndex] = new Tensor('int32', g.pastIndex, [g.numSeqs, g.pastLen]);
    inputs[names.mask] = new Tensor('float32', g.mask, [1, g.numSeqs, g.mask.length / (g.numSeqs * keys), keys]);
    inputs[names.keySplit] = new Tensor('int64', g.keySplit, [2]);
  }
  return inputs;
}
