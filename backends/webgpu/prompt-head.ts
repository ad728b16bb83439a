import type { PromptLogprobsOutput, PromptLogprobsRequest } from '../../src/engine/backend.js';
import { emptyPromptLogprobs, wantedPromptRows, writePromptLogprob } from '../shared/prompt-logprobs.js';
import { MAP_READ, Usage, type GpuContext } from './gpu.js';
import * as k from './kernels.js';
import type { ModelOnDevice } from './plan.js';

/**
 * Prompt log-probs (ForwardBatch.promptLogprobs) after a step: the graph's final norm and lm-head
 * over the asked token rows of the last hidden state, with the same kernels as the step and a
 * step uniform of its own (its "sequences" are the asked rows), in chunks of rows whose logits
 * fit one binding. Each chunk's logits are read back and turned into log-probs on the host.
 */
export class PromptHead {
  private readonly step: GPUBuffer;
  /** tokenSeq[T] (unused) | 0 | row + 1 per asked row: gather_last reads the row before each "sequence end". */
  private readonly meta: GPUBuffer;
  private readonly logits: GPUBuffer;
  private readonly readback: GPUBuffer;
  private readonly dispatches: k.Dispatch[];
  private readonly owned: GPUBuffer[];

  /** `hidden`: the step's activation that gather_last reads (the residual stream after the last layer). */
  static build(ctx: GpuContext, model: ModelOnDevice, hidden: GPUBuffer, maxTokens: number): PromptHead {
    const { result, buffers } = ctx.recordBuffers(() => ctx.captureErrors(() => new PromptHead(ctx, model, hidden, maxTokens)));
    result.owned.push(...buffers);
    return result;
  }

  /** Asked rows per pass. */
  readonly rows: number;

  private constructor(
    private readonly ctx: GpuContext,
    private readonly model: ModelOnDevice,
    hidden: GPUBuffer,
    readonly maxTokens: number,
  ) {
    this.owned = [];
    const c = model.config;
    const graph = model.graph;
    const gather = graph.ops.find((op) => op.op === 'gather_last')!;
    const norm = graph.ops.find((op) => op.op === 'rmsnorm' && op.x === gather.out);
    if (gather.op !== 'gather_last' || norm?.op !== 'rmsnorm') throw new Error('webgpu: the graph has no final gather_last and rmsnorm');
    this.rows = Math.max(1, Math.min(64, Math.floor(ctx.maxBindingBytes / (c.vocabSize * 4))));
    this.step = ctx.buffer('prompt head step', k.stepUniformBytes, Usage.UNIFORM | Usage.COPY_DST);
    this.meta = ctx.storage('prompt head rows', (maxTokens + this.rows + 1) * 4);
    const gathered = ctx.storage('prompt head hidden', this.rows * c.hiddenSize * 4);
    const normed = ctx.storage('prompt head normed', this.rows * c.hiddenSize * 4);
    this.logits = ctx.storage('prompt head logits', this.rows * c.vocabSize * 4);
    this.readback = ctx.buffer('prompt head readback', this.rows * c.vocabSize * 4, Usage.MAP_READ | Usage.COPY_DST);
    const placeholder = ctx.storage('placeholder', 16);
    this.dispatches = [
      k.gatherLast(ctx, this.step, hidden, this.meta, gathered, c.hiddenSize),
      k.rmsnorm(ctx, this.step, { x: gathered, residual: null, weight: model.vectors.get(norm.weight)!, out: normed, cols: c.hiddenSize, rows: 'seqs', eps: c.rmsNormEps, placeholder }),
      ...k.linear(ctx, this.step, normed, model.matrices.get(graph.lmHead)!, this.logits, 'seqs', 'lm_head'),
    ];
  }

  /** The log-probs the request asks for, from the step of `numTokens` tokens just run. */
  async run(request: PromptLogprobsRequest, numTokens: number): Promise<PromptLogprobsOutput> {
    const out = emptyPromptLogprobs(request);
    const vocab = this.model.config.vocabSize;
    const wanted = wantedPromptRows(request);
    for (let start = 0; start < wanted.length; start += this.rows) {
      const chunk = wanted.subarray(start, start + this.rows);
      const shape: k.StepShape = { numTokens, numSeqs: chunk.length, numSplits: 1, splitSize: 0, numPenalties: 0, topLogprobs: 0 };
      const meta = new Int32Array(numTokens + 1 + chunk.length);
      meta.set(chunk.map((row) => row + 1), numTokens + 1);
      const queue = this.ctx.device.queue;
      queue.writeBuffer(this.step, 0, k.encodeStep(shape));
      queue.writeBuffer(this.meta, 0, meta);
      const encoder = this.ctx.device.createCommandEncoder({ label: 'prompt log-probs' });
      const pass = encoder.beginComputePass({ label: 'prompt head' });
      for (const d of this.dispatches) {
        const workgroups = d.workgroups(shape);
        if (!workgroups) continue;
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(workgroups[0], workgroups[1]);
      }
      pass.end();
      const bytes = chunk.length * vocab * 4;
      encoder.copyBufferToBuffer(this.logits, 0, this.readback, 0, bytes);
      queue.submit([encoder.finish()]);
      await this.readback.mapAsync(MAP_READ, 0, bytes);
      const logits = new Float32Array(this.readback.getMappedRange(0, bytes).slice(0));
      this.readback.unmap();
      chunk.forEach((row, i) => writePromptLogprob(out, request, row, logits.subarray(i * vocab, (i + 1) * vocab)));
    }
    return out;
  }

  destroy(): void {
    for (const b of this.owned) b.destroy();
  }
}
