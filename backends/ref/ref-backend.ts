import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Backend, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, RankCollectives, StepOutput } from '../../src/engine/backend.js';
import { validateForwardBatch } from '../../src/engine/forward-batch.js';
import { hostKvCapacity, kvBytesPerToken, touchPages } from '../../src/engine/kv-capacity.js';
import { BackendError } from '../../src/errors.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { toFloat32 } from '../../src/model/dtype.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { sampleLogitsInTurns } from '../shared/host-sampler.js';
import { hostPromptLogprobs } from '../shared/prompt-logprobs.js';
import * as ops from './ops.js';

/** Multiply-adds, and logits sampled, between two yields to the event loop: tens of milliseconds each. */
const workPerTurn = 1 << 24;
const sampledPerTurn = 1 << 21;

/** Plain TypeScript, f32 throughout, interpreting the graph op by op: the oracle for other backends. */
export class RefBackend implements Backend {
  readonly name = 'ref' as const;
  readonly description = 'ref: plain TypeScript on the CPU (f32, one thread)';
  readonly supportsPromptLogprobs = true;
  private config!: LlamaConfig;
  private graph!: LlamaGraph;
  private readonly weights = new Map<string, Float32Array>();
  private invFreq!: Float64Array;
  private kCache: Float32Array[] = [];
  private vCache: Float32Array[] = [];
  private kvSpec: KvCacheSpec | null = null;
  /** Set on a tensor-parallel rank (backends/tensor-parallel): runs the graph's collectives, and only rank 0 samples. */
  private readonly collectives: RankCollectives | null;

  constructor(options: { collectives?: RankCollectives } = {}) {
    this.collectives = options.collectives ?? null;
  }

  async load(model: ModelSpec): Promise<void> {
    this.config = model.config;
    this.graph = model.graph;
    this.invFreq = ropeInverseFrequencies(model.config);
    const names = new Set<string>();
    for (const op of model.graph.ops) {
      if ('weight' in op) names.add(op.weight);
      if ('table' in op) names.add(op.table);
    }
    for (const name of names) {
      const info = model.weights.info(name)!;
      this.weights.set(name, toFloat32(await model.weights.read(name), info.dtype));
    }
  }

  kvCapacity(budget: KvBudget): number {
    return hostKvCapacity(kvBytesPerToken(this.config, 4), budget);
  }

  async allocateKvCache(spec: KvCacheSpec): Promise<void> {
    const size = spec.numPages * spec.pageSize * this.config.numKvHeads * this.config.headDim;
    this.kvSpec = spec;
    this.kCache = Array.from({ length: this.config.numLayers }, () => new Float32Array(size));
    this.vCache = Array.from({ length: this.config.numLayers }, () => new Float32Array(size));
    touchPages(...this.kCache, ...this.vCache);
  }

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    if (!this.kvSpec) throw new BackendError(this.name, 'forward() before allocateKvCache()');
    validateForwardBatch(this.name, batch, { vocabSize: this.config.vocabSize, ...this.kvSpec });
    const numTokens = batch.tokenIds.length;
    const numSeqs = batch.kvLens.length;
    const buffers = new Map<string, Float32Array>();
    for (const [name, a] of Object.entries(this.graph.activations)) {
      buffers.set(name, new Float32Array((a.rows === 'tokens' ? numTokens : numSeqs) * a.cols));
    }
    const rowsOf = (name: string) => (this.graph.activations[name]!.rows === 'tokens' ? numTokens : numSeqs);
    const buf = (name: string) => buffers.get(name)!;
    let output: StepOutput | null = null;
    for (const op of this.graph.ops) {
      if (op.op === 'sample') {
        await batch.sampling.tokenMask?.ready;
        if (this.collectives && this.collectives.rank !== 0) continue;
        output = await sampleLogitsInTurns(buf(op.logits), this.config.vocabSize, batch.sampling, Math.max(1, Math.floor(sampledPerTurn / this.config.vocabSize)), yieldToEventLoop);
      } else if (op.op === 'linear') {
        await this.linearInTurns(buf(op.x), this.weights.get(op.weight)!, rowsOf(op.x), this.graph.activations[op.x]!.cols, buf(op.out));
      } else {
        this.run(op, batch, buf, rowsOf);
        if (op.op === 'attention') await yieldToEventLoop();
      }
    }
    if (batch.promptLogprobs) output = { ...output!, promptLogprobs: this.promptLogprobs(batch, buf) };
    return output!;
  }

  /** The final norm and LM head over the wanted token rows of the last hidden state (the graph computes them for the last rows only). */
  private promptLogprobs(batch: ForwardBatch, buf: (name: string) => Float32Array) {
    const c = this.config;
    const gather = this.graph.ops.find((op) => op.op === 'gather_last') as { x: string };
    const hidden = buf(gather.x);
    const norm = this.weights.get('model.norm.weight')!;
    const head = this.weights.get(this.graph.lmHead)!;
    const normed = new Float32Array(c.hiddenSize);
    const logits = new Float32Array(c.vocabSize);
    return hostPromptLogprobs(batch.promptLogprobs!, (row) => {
      ops.rmsnorm(hidden.subarray(row * c.hiddenSize, (row + 1) * c.hiddenSize), norm, 1, c.rmsNormEps, normed);
      ops.linear(normed, head, 1, c.hiddenSize, logits);
      return logits;
    });
  }

  private run(
    op: GraphOp,
    batch: ForwardBatch,
    buf: (name: string) => Float32Array,
    rowsOf: (name: string) => number,
  ): void {
    const c = this.config;
    const w = (name: string) => this.weights.get(name)!;
    switch (op.op) {
      case 'embedding':
        if (op.vocabStart !== undefined) return ops.embeddingSlice(w(op.table), c.hiddenSize, op.vocabStart, batch.tokenIds, buf(op.out));
        return ops.embedding(w(op.table), c.hiddenSize, batch.tokenIds, buf(op.out));
      case 'rmsnorm':
        return ops.rmsnorm(buf(op.x), w(op.weight), rowsOf(op.x), c.rmsNormEps, buf(op.out));
      case 'add_rmsnorm':
        ops.add(buf(op.x), buf(op.residual), buf(op.x).length);
        return ops.rmsnorm(buf(op.x), w(op.weight), rowsOf(op.x), c.rmsNormEps, buf(op.out));
      case 'rope':
        ops.rope(buf(op.q), batch.positions, c.numHeads, c.headDim, this.invFreq);
        return ops.rope(buf(op.k), batch.positions, c.numKvHeads, c.headDim, this.invFreq);
      case 'attention':
        return ops.pagedAttention(
          buf(op.q),
          buf(op.k),
          buf(op.v),
          this.kCache[op.layer]!,
          this.vCache[op.layer]!,
          { ...batch, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, pageSize: this.kvSpec!.pageSize },
          buf(op.out),
        );
      case 'silu_mul':
        return ops.siluMul(buf(op.gate), buf(op.up), buf(op.out).length, buf(op.out));
      case 'add':
        return ops.add(buf(op.x), buf(op.y), buf(op.x).length);
      case 'gather_last':
        return ops.gatherLast(buf(op.x), this.graph.activations[op.x]!.cols, batch.queryStart, buf(op.out));
      case 'all_reduce':
        return this.collective().allReduce(buf(op.x));
      case 'all_gather':
        return this.collective().allGather(buf(op.x), buf(op.out), rowsOf(op.x), op.parts);
      case 'linear':
      case 'sample':
        throw new BackendError(this.name, `${op.op} runs in turns in forward()`);
    }
  }

  /** x [rows, inFeatures] times weight^T, a few rows at a time with the event loop free in between (the LM head of a thousand rows takes seconds). */
  private async linearInTurns(x: Float32Array, weight: Float32Array, rows: number, inFeatures: number, out: Float32Array): Promise<void> {
    const outFeatures = weight.length / inFeatures;
    const rowsPerTurn = Math.max(1, Math.floor(workPerTurn / weight.length));
    for (let r = 0; r < rows; r += rowsPerTurn) {
      if (r > 0) await yieldToEventLoop();
      const n = Math.min(rowsPerTurn, rows - r);
      ops.linear(x.subarray(r * inFeatures, (r + n) * inFeatures), weight, n, inFeatures, out.subarray(r * outFeatures, (r + n) * outFeatures));
    }
  }

  private collective(): RankCollectives {
    if (!this.collectives) throw new BackendError(this.name, 'a tensor-parallel graph needs the ranks of backends/tensor-parallel');
    return this.collectives;
  }

  async close(): Promise<void> {
    this.weights.clear();
    this.kCache = [];
    this.vCache = [];
    this.kvSpec = null;
  }
}
