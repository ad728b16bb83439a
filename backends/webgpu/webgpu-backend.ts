import type { Backend, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, StepOutput, TokenMaskBatch } from '../../src/engine/backend.js';
import { validateForwardBatch } from '../../src/engine/forward-batch.js';
import { hostKvBudgetBytes, kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import { BackendError, UserError } from '../../src/errors.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { toFloat32 } from '../../src/model/dtype.js';
import type { LlamaGraph } from '../../src/model/graph.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { MAP_READ, type GpuContext } from './gpu.js';
import { encodeStep, sampleOutputWords, type Dispatch, type StepShape } from './kernels.js';
import { CompiledPlan, type Capacity, type ModelOnDevice } from './plan.js';
import { packStep, type PackedStep } from './step-inputs.js';
import { PromptHead } from './prompt-head.js';
import { StepProfiler, type OpTiming } from './profiler.js';
import { uploadMatrix, uploadVector, type DeviceMatrix } from './weights.js';

export interface WebGpuTuning {
  /** KV positions per attention split before decode attention is split over the KV length. */
  attentionSplitSize?: number;
  /** Record per-op GPU times with timestamp queries (one compute pass per dispatch). */
  profile?: boolean;
}

const initialCapacity: Capacity = { tokens: 64, seqs: 8, pageTable: 256, penalties: 256, biases: 64, topLogprobs: 4, attentionPartials: 4096 };

/**
 * The Llama graph as WGSL compute shaders through Dawn. The graph is compiled into a fixed list
 * of dispatches at load; every forward writes the step's inputs, encodes that list into one
 * command buffer, submits it once and reads back only the sampled tokens and log-probs.
 */
export class WebGpuBackend implements Backend {
  readonly name = 'webgpu' as const;
  readonly supportsPromptLogprobs = true;
  readonly description: string;
  private config!: LlamaConfig;
  private graph!: LlamaGraph;
  private readonly matrices = new Map<string, DeviceMatrix>();
  private readonly vectors = new Map<string, GPUBuffer>();
  /** Where shared-memory masks are copied for writeBuffer. */
  private maskCopy = new Int32Array(0);
  private invFreq: GPUBuffer | null = null;
  private kCache: GPUBuffer[] = [];
  private vCache: GPUBuffer[] = [];
  private kvSpec: KvCacheSpec | null = null;
  private plan: CompiledPlan | null = null;
  /** Built for `plan` (it reads the plan's last hidden state) on the first step that asks prompt log-probs. */
  private promptHead: { plan: CompiledPlan; head: PromptHead } | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private profiler: StepProfiler | null = null;

  constructor(
    /** Holds Dawn's instance alive for as long as this backend exists (see GpuContext). */
    private readonly ctx: GpuContext,
    private readonly tuning: WebGpuTuning = {},
  ) {
    this.description = ctx.description;
  }

  async load(model: ModelSpec): Promise<void> {
    this.config = model.config;
    this.graph = model.graph;
    const c = model.config;
    for (const op of model.graph.ops) {
      const name = 'weight' in op ? op.weight : 'table' in op ? op.table : null;
      if (name === null || this.matrices.has(name) || this.vectors.has(name)) continue;
      const info = model.weights.info(name);
      if (!info) throw new UserError(`${model.weights.description}: tensor "${name}" is missing`);
      const bytes = await model.weights.read(name);
      if (info.shape.length === 1) {
        this.vectors.set(name, uploadVector(this.ctx, name, toFloat32(bytes, info.dtype)));
      } else {
        this.matrices.set(name, uploadMatrix(this.ctx, name, bytes, info.dtype, info.shape[0]!, info.shape[1]!));
      }
    }
    this.invFreq = uploadVector(this.ctx, 'rope inverse frequencies', Float32Array.from(ropeInverseFrequencies(c)));
    if (this.tuning.profile) this.setProfiling(true);
    await this.ctx.device.queue.onSubmittedWorkDone();
  }

  /**
   * WebGPU has no memory query, so the pool is sized from what is known: the host's KV budget on
   * a software adapter, else memFractionStatic of the largest buffer the device allows; never
   * more than one binding per layer holds.
   */
  kvCapacity(budget: KvBudget): number {
    if (budget.maxTotalTokens !== null) return budget.maxTotalTokens;
    const c = this.config;
    const maxKvTokens = Math.floor(this.ctx.maxBindingBytes / (c.numKvHeads * c.headDim * 4));
    const bytes = this.ctx.isSoftware ? hostKvBudgetBytes : this.ctx.device.limits.maxBufferSize * budget.memFractionStatic;
    return Math.min(maxKvTokens, Math.floor(bytes / kvBytesPerToken(c, 4)));
  }

  async allocateKvCache(spec: KvCacheSpec): Promise<void> {
    const c = this.config;
    const perLayer = spec.numPages * spec.pageSize * c.numKvHeads * c.headDim * 4;
    if (perLayer > this.ctx.maxBindingBytes) {
      const maxTokens = Math.floor(this.ctx.maxBindingBytes / (c.numKvHeads * c.headDim * 4));
      throw new UserError(`${this.name}: a KV cache of ${spec.numPages * spec.pageSize} tokens exceeds the adapter's ${this.ctx.maxBindingBytes}-byte buffer binding per layer (at most ${maxTokens} tokens)`);
    }
    this.freeKvCache();
    this.kCache = Array.from({ length: c.numLayers }, (_, l) => this.ctx.storage(`k cache ${l}`, perLayer));
    this.vCache = Array.from({ length: c.numLayers }, (_, l) => this.ctx.storage(`v cache ${l}`, perLayer));
    this.kvSpec = spec;
    this.plan?.destroy();
    this.plan = null;
    this.promptHead?.head.destroy();
    this.promptHead = null;
  }

  forward(batch: ForwardBatch): Promise<StepOutput> {
    const run = this.queue.then(() => this.runStep(batch));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** How many storage bindings a weight matrix was split into (1 when it fits in one). */
  weightBindings(name: string): number {
    return this.matrices.get(name)?.chunks.length ?? 0;
  }

  /**
   * Per-op GPU timing with timestamp queries (one compute pass per dispatch, so steps get a
   * little slower). Returns false when the adapter has no timestamp queries.
   */
  setProfiling(on: boolean): boolean {
    if (!on) {
      this.profiler?.destroy();
      this.profiler = null;
      return true;
    }
    this.profiler ??= StepProfiler.create(this.ctx);
    return this.profiler !== null;
  }

  /** Per-op GPU time of the last step (with tuning.profile on an adapter with timestamp queries). */
  lastProfile(): OpTiming[] | null {
    return this.profiler?.last ?? null;
  }

  async close(): Promise<void> {
    await this.queue;
    this.plan?.destroy();
    this.plan = null;
    this.promptHead?.head.destroy();
    this.promptHead = null;
    this.freeKvCache();
    for (const m of this.matrices.values()) for (const chunk of m.chunks) chunk.buffer.destroy();
    for (const v of this.vectors.values()) v.destroy();
    this.invFreq?.destroy();
    this.matrices.clear();
    this.vectors.clear();
    this.profiler?.destroy();
    this.ctx.destroy();
  }

  private async runStep(batch: ForwardBatch): Promise<StepOutput> {
    if (!this.kvSpec) throw new BackendError(this.name, 'forward() before allocateKvCache()');
    if (this.ctx.isLost) throw new BackendError(this.name, 'the device was lost');
    const { numPages, pageSize } = this.kvSpec;
    validateForwardBatch(this.name, batch, { vocabSize: this.config.vocabSize, numPages, pageSize });
    const packed = packStep(batch);
    const numTokens = batch.tokenIds.length;
    const numSeqs = batch.kvLens.length;
    const plan = await this.planFor(packed, numTokens, numSeqs);
    const shape = this.stepShape(batch, packed, plan.capacity);
    this.upload(plan, packed, shape);

    const outputWords = sampleOutputWords(numSeqs, shape.topLogprobs);
    const mask = packed.maskedSeqs > 0 ? batch.sampling.tokenMask! : null;
    const encoder = this.ctx.device.createCommandEncoder({ label: 'forward step' });
    encoder.clearBuffer(plan.output, 0, outputWords * 4);
    if (this.profiler) {
      if (mask) await this.writeMask(plan, mask);
      this.profiler.encode(encoder, plan.dispatches, shape);
    } else if (mask) {
      // The model runs while the engine computes the masks; sampling is submitted once they are ready.
      this.encodePass(encoder, plan.dispatches.slice(0, plan.maskedFrom), shape);
      this.ctx.device.queue.submit([encoder.finish()]);
      await this.writeMask(plan, mask);
      const sampling = this.ctx.device.createCommandEncoder({ label: 'masked sampling' });
      this.encodePass(sampling, plan.dispatches.slice(plan.maskedFrom), shape);
      this.finishStep(sampling, plan, outputWords);
    } else {
      this.encodePass(encoder, plan.dispatches, shape);
    }
    if (!mask || this.profiler) this.finishStep(encoder, plan, outputWords);
    await Promise.all([plan.readback.mapAsync(MAP_READ, 0, outputWords * 4), this.profiler?.collect()]);
    const words = new Uint32Array(plan.readback.getMappedRange(0, outputWords * 4).slice(0));
    plan.readback.unmap();
    const output = decodeOutput(words, numSeqs, packed.maxLogprobs, shape.topLogprobs);
    if (batch.promptLogprobs) output.promptLogprobs = await this.promptHeadFor(plan).run(batch.promptLogprobs, numTokens);
    return output;
  }

  private promptHeadFor(plan: CompiledPlan): PromptHead {
    if (this.promptHead?.plan !== plan) {
      this.promptHead?.head.destroy();
      const gather = this.graph.ops.find((op) => op.op === 'gather_last');
      if (gather?.op !== 'gather_last') throw new BackendError(this.name, 'the graph has no gather_last op');
      this.promptHead = { plan, head: PromptHead.build(this.ctx, this.modelOnDevice(), plan.activations.get(gather.x)!, plan.capacity.tokens) };
    }
    return this.promptHead.head;
  }

  private encodePass(encoder: GPUCommandEncoder, dispatches: Dispatch[], shape: StepShape): void {
    const pass = encoder.beginComputePass({ label: 'forward' });
    for (const d of dispatches) {
      const workgroups = d.workgroups(shape);
      if (!workgroups) continue;
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(workgroups[0], workgroups[1]);
    }
    pass.end();
  }

  /** Copies the sample output to the readback buffer and submits. */
  private finishStep(encoder: GPUCommandEncoder, plan: CompiledPlan, outputWords: number): void {
    encoder.copyBufferToBuffer(plan.output, 0, plan.readback, 0, outputWords * 4);
    this.ctx.device.queue.submit([encoder.finish()]);
  }

  /** Uploads the step's token masks once the engine has computed them. */
  private async writeMask(plan: CompiledPlan, mask: TokenMaskBatch): Promise<void> {
    await mask.ready;
    // Dawn's writeBuffer crashes on shared memory (the mask worker's): hand it a copy then.
    let bits = mask.bits;
    if (bits.buffer instanceof SharedArrayBuffer) {
      if (this.maskCopy.length < bits.length) this.maskCopy = new Int32Array(bits.length);
      bits = this.maskCopy.subarray(0, bits.length);
      bits.set(mask.bits);
    }
    this.ctx.device.queue.writeBuffer(plan.tokenMask, 0, new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
  }

  private async planFor(packed: PackedStep, numTokens: number, numSeqs: number): Promise<CompiledPlan> {
    const need: Capacity = {
      tokens: numTokens,
      seqs: numSeqs,
      pageTable: packed.pageTable.length,
      penalties: packed.penaltyEntries.length / 3,
      biases: packed.biasEntries.length / 3,
      topLogprobs: Math.max(0, packed.maxLogprobs),
      attentionPartials: 0,
    };
    if (this.plan?.fits(need)) return this.plan;
    const old = this.plan?.capacity ?? initialCapacity;
    const grow = (have: number, want: number) => (want <= have ? have : Math.max(want, have * 2));
    const capacity: Capacity = {
      tokens: grow(old.tokens, need.tokens),
      seqs: grow(old.seqs, need.seqs),
      pageTable: grow(old.pageTable, need.pageTable),
      penalties: grow(old.penalties, need.penalties),
      biases: grow(old.biases, need.biases),
      topLogprobs: grow(old.topLogprobs, need.topLogprobs),
      attentionPartials: old.attentionPartials,
    };
    this.checkBindingLimits(capacity, need);
    this.plan?.destroy();
    this.plan = CompiledPlan.build(this.ctx, capacity, this.modelOnDevice());
    await this.ctx.checkErrors();
    return this.plan;
  }

  /** Keeps every activation buffer within one binding: shrinks growth, or says the batch is too large. */
  private checkBindingLimits(capacity: Capacity, need: Capacity): void {
    const limit = this.ctx.maxBindingBytes;
    const widest = (rows: 'tokens' | 'seqs') =>
      Math.max(...Object.values(this.graph.activations).filter((a) => a.rows === rows).map((a) => a.cols * 4));
    for (const rows of ['tokens', 'seqs'] as const) {
      const maxRows = Math.floor(limit / widest(rows));
      if (need[rows] > maxRows) {
        throw new BackendError(this.name, `${need[rows]} ${rows} in one step exceed what one ${limit}-byte binding holds (${maxRows}); schedule smaller steps`);
      }
      capacity[rows] = Math.min(capacity[rows], maxRows);
    }
  }

  private stepShape(batch: ForwardBatch, packed: PackedStep, capacity: Capacity): StepShape {
    const numTokens = batch.tokenIds.length;
    const numSeqs = batch.kvLens.length;
    let maxKv = 0;
    for (const n of batch.kvLens) maxKv = Math.max(maxKv, n);
    const splitTarget = this.tuning.attentionSplitSize ?? 256;
    const byLength = Math.ceil(maxKv / splitTarget);
    const byRoom = Math.floor(capacity.attentionPartials / (numTokens * this.config.numHeads));
    let numSplits = Math.max(1, Math.min(byLength, byRoom));
    const splitSize = Math.ceil(maxKv / numSplits);
    numSplits = Math.ceil(maxKv / splitSize);
    return {
      numTokens,
      numSeqs,
      numSplits,
      splitSize,
      numPenalties: packed.penaltyEntries.length / 3,
      maskedSeqs: packed.maskedSeqs,
      numBiases: packed.biasEntries.length / 3,
      topLogprobs: Math.max(0, packed.maxLogprobs),
    };
  }

  private upload(plan: CompiledPlan, p: PackedStep, shape: StepShape): void {
    const q = this.ctx.device.queue;
    const write = (buffer: GPUBuffer, data: ArrayBufferView | ArrayBuffer) => {
      const view = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      if (view.byteLength > 0) q.writeBuffer(buffer, 0, view);
    };
    write(plan.step, encodeStep(shape));
    write(plan.tokenIds, p.tokenIds);
    write(plan.positions, p.positions);
    write(plan.slotMapping, p.slotMapping);
    write(plan.meta, p.meta);
    write(plan.pageTable, p.pageTable);
    write(plan.seqSampling, p.seqSampling);
    write(plan.penaltyEntries, p.penaltyEntries);
    write(plan.seqPenalties, p.seqPenalties);
    write(plan.biasEntries, p.biasEntries);
  }

  private modelOnDevice(): ModelOnDevice {
    return {
      config: this.config,
      graph: this.graph,
      matrices: this.matrices,
      vectors: this.vectors,
      invFreq: this.invFreq!,
      kCache: this.kCache,
      vCache: this.vCache,
      pageSize: this.kvSpec!.pageSize,
    };
  }

  private freeKvCache(): void {
    for (const b of [...this.kCache, ...this.vCache]) b.destroy();
    this.kCache = [];
    this.vCache = [];
  }
}

function decodeOutput(words: Uint32Array, numSeqs: number, maxLogprobs: number, k: number): StepOutput {
  const floats = new Float32Array(words.buffer);
  const tokens = Int32Array.from(words.subarray(0, numSeqs));
  const logprobs = maxLogprobs >= 0 ? floats.slice(numSeqs, 2 * numSeqs) : null;
  const topLogprobs =
    maxLogprobs > 0
      ? {
          k,
          ids: Int32Array.from(words.subarray(2 * numSeqs, 2 * numSeqs + numSeqs * k)),
          logprobs: floats.slice(2 * numSeqs + numSeqs * k, 2 * numSeqs + 2 * numSeqs * k),
        }
      : null;
  return { tokens, logprobs, topLogprobs };
}
