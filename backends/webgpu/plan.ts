import type { LlamaConfig } from '../../src/model/config.js';
import type { LlamaGraph } from '../../src/model/graph.js';
import { Usage, type GpuContext } from './gpu.js';
import * as k from './kernels.js';
import type { DeviceMatrix } from './weights.js';

/** How many rows of each kind the plan's buffers hold; a step that needs more rebuilds the plan. */
export interface Capacity {
  tokens: number;
  seqs: number;
  pageTable: number;
  penalties: number;
  /** logit_bias / min_tokens entries. */
  biases: number;
  topLogprobs: number;
  /** tokens x heads x splits entries of attention partial results. */
  attentionPartials: number;
}

export interface ModelOnDevice {
  config: LlamaConfig;
  graph: LlamaGraph;
  matrices: Map<string, DeviceMatrix>;
  vectors: Map<string, GPUBuffer>;
  invFreq: GPUBuffer;
  kCache: GPUBuffer[];
  vCache: GPUBuffer[];
  pageSize: number;
}

/**
 * The graph compiled for one capacity: every activation and input buffer, and the ordered list
 * of dispatches with their bind groups, built once and replayed by every step.
 */
export class CompiledPlan {
  readonly step: GPUBuffer;
  readonly tokenIds: GPUBuffer;
  readonly positions: GPUBuffer;
  readonly slotMapping: GPUBuffer;
  readonly meta: GPUBuffer;
  readonly pageTable: GPUBuffer;
  readonly seqSampling: GPUBuffer;
  readonly penaltyEntries: GPUBuffer;
  readonly seqPenalties: GPUBuffer;
  readonly biasEntries: GPUBuffer;
  /** Allowed-token bitmasks of the constrained sequences (a row per sequence at most). */
  readonly tokenMask: GPUBuffer;
  /** Dispatches from this index on read the token masks: a step with masks submits them once the masks are ready. */
  maskedFrom = 0;
  readonly output: GPUBuffer;
  readonly readback: GPUBuffer;
  readonly dispatches: k.Dispatch[] = [];
  /** The graph's activation buffers by name. */
  readonly activations = new Map<string, GPUBuffer>();
  private owned: GPUBuffer[] = [];

  /** Builds the plan; every buffer it creates (parameters included) is destroyed with it. */
  static build(ctx: GpuContext, capacity: Capacity, model: ModelOnDevice): CompiledPlan {
    const { result, buffers } = ctx.recordBuffers(() => ctx.captureErrors(() => new CompiledPlan(ctx, capacity, model)));
    result.owned = buffers;
    return result;
  }

  private constructor(
    ctx: GpuContext,
    readonly capacity: Capacity,
    model: ModelOnDevice,
  ) {
    const c = model.config;
    const cap = capacity;
    const i32 = (label: string, n: number) => ctx.storage(label, n * 4);
    this.step = ctx.buffer('step', k.stepUniformBytes, Usage.UNIFORM | Usage.COPY_DST);
    this.tokenIds = i32('tokenIds', cap.tokens);
    this.positions = i32('positions', cap.tokens);
    this.slotMapping = i32('slotMapping', cap.tokens);
    this.meta = i32('meta', cap.tokens + 3 * cap.seqs + 2);
    this.pageTable = i32('pageTable', cap.pageTable);
    this.seqSampling = ctx.storage('seqSampling', cap.seqs * k.seqSamplingBytes);
    this.penaltyEntries = i32('penaltyEntries', 3 * cap.penalties);
    this.seqPenalties = i32('seqPenalties', 4 * cap.seqs);
    this.biasEntries = i32('biasEntries', 3 * cap.biases);
    this.tokenMask = i32('tokenMask', cap.seqs * k.maskWords(c.vocabSize));
    const outputBytes = k.sampleOutputWords(cap.seqs, cap.topLogprobs) * 4;
    this.output = ctx.storage('sample output', outputBytes);
    this.readback = ctx.buffer('sample readback', outputBytes, Usage.MAP_READ | Usage.COPY_DST);
    const placeholder = i32('placeholder', 4);
    const partials = ctx.storage('attention partials', cap.attentionPartials * (c.headDim + 2) * 4);

    const acts = this.activations;
    for (const [name, a] of Object.entries(model.graph.activations)) {
      acts.set(name, ctx.storage(name, (a.rows === 'tokens' ? cap.tokens : cap.seqs) * a.cols * 4));
    }
    const act = (name: string) => acts.get(name)!;
    const rowsOf = (name: string) => model.graph.activations[name]!.rows;
    const matrix = (name: string) => model.matrices.get(name)!;
    const vector = (name: string) => model.vectors.get(name)!;
    const heads = { numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim };
    const s = this.step;
    const add = (...d: k.Dispatch[]) => this.dispatches.push(...d);

    for (const op of model.graph.ops) {
      switch (op.op) {
        case 'embedding':
          add(...k.embedding(ctx, s, matrix(op.table), this.tokenIds, act(op.out)));
          break;
        case 'rmsnorm':
        case 'add_rmsnorm':
          add(
            k.rmsnorm(ctx, s, {
              x: act(op.x),
              residual: op.op === 'add_rmsnorm' ? act(op.residual) : null,
              weight: vector(op.weight),
              out: act(op.out),
              cols: model.graph.activations[op.x]!.cols,
              rows: rowsOf(op.x),
              eps: c.rmsNormEps,
              placeholder,
            }),
          );
          break;
        case 'linear':
          add(...k.linear(ctx, s, act(op.x), matrix(op.weight), act(op.out), rowsOf(op.x), op.weight === model.graph.lmHead ? 'lm_head' : 'linear'));
          break;
        case 'rope':
          add(k.rope(ctx, s, act(op.q), act(op.k), this.positions, model.invFreq, heads));
          break;
        case 'attention':
          add(
            ...k.attention(
              ctx,
              s,
              {
                q: act(op.q),
                k: act(op.k),
                v: act(op.v),
                kCache: model.kCache[op.layer]!,
                vCache: model.vCache[op.layer]!,
                slotMapping: this.slotMapping,
                meta: this.meta,
                pageTable: this.pageTable,
                partials,
                out: act(op.out),
                pageSize: model.pageSize,
              },
              heads,
            ),
          );
          break;
        case 'silu_mul':
          add(k.siluMul(ctx, s, act(op.gate), act(op.up), act(op.out), model.graph.activations[op.out]!.cols, rowsOf(op.out)));
          break;
        case 'add':
          add(k.add(ctx, s, act(op.x), act(op.y), model.graph.activations[op.x]!.cols, rowsOf(op.x)));
          break;
        case 'gather_last':
          add(k.gatherLast(ctx, s, act(op.x), this.meta, act(op.out), model.graph.activations[op.x]!.cols));
          break;
        case 'sample':
          add(k.logitBias(ctx, s, act(op.logits), this.biasEntries, c.vocabSize));
          add(k.penalties(ctx, s, act(op.logits), this.penaltyEntries, this.seqPenalties, c.vocabSize));
          this.maskedFrom = this.dispatches.length;
          add(
            k.tokenMask(ctx, s, act(op.logits), this.seqSampling, this.tokenMask, c.vocabSize),
            k.sample(ctx, s, act(op.logits), this.seqSampling, this.output, c.vocabSize),
          );
          break;
      }
    }
  }

  fits(need: Capacity): boolean {
    const cap = this.capacity;
    return (
      need.tokens <= cap.tokens &&
      need.seqs <= cap.seqs &&
      need.pageTable <= cap.pageTable &&
      need.penalties <= cap.penalties &&
      need.biases <= cap.biases &&
      need.topLogprobs <= cap.topLogprobs
    );
  }

  destroy(): void {
    for (const b of this.owned) b.destroy();
  }
}
