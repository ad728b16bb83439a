import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Backend, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, RankCollectives, StepOutput } from '../../src/engine/backend.js';
import { validateForwardBatch } from '../../src/engine/forward-batch.js';
import { hostKvCapacity, kvBytesPerToken, touchPages } from '../../src/engine/kv-capacity.js';
import { BackendError } from '../../src/errors.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { toFloat32 } from '../../src/model/dtype.js';
import type { GraphOp, LlamaGraph } from '../../src/model/graph.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { emptySampleOutput, sampleRowsInTurns } from '../shared/host-sampler.js';
import { chunksOf, logitsRowsPerChunk, sampledSeqs } from '../shared/logits-rows.js';
import { hostPromptLogprobs } from '../shared/prompt-logprobs.js';
import * as ops from './ops.js';

/** Multiply-adds, and logits sampled, between two yields to the event loop: tens of milliseconds each. */
const workPerTurn = 1 << 24;
const sampledPerTurn = 1 << 21;

export interface RefBackendOptions {
  /** Set on a tensor-parallel rank (backends/tensor-parallel): runs the graph's collectives, and only rank 0 samples. */
  collectives?: RankCollectives;
  /** The most logits the LM head produces at once (default: backends/shared/logits-rows.ts). */
  logitsChunkBytes?: number;
}

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
  private readonly collectives: RankCollectives | null;
  private logitsActivation = '';
  private logitsChunkRows = 1;
  private sampleTurns = { rowsPerTurn: 1, yieldTurn: () => yieldToEventLoop() };
  /** The most logits rows one LM-head call produced since load (memory held for logits: this x vocab floats). */
  maxLogitsRows = 0;

  constructor(private readonly options: RefBackendOptions = {}) {
    this.collectives = options.collectives ?? null;
  }

  async load(model: ModelSpec): Promise<void> {
    this.config = model.config;
    this.graph = model.graph;
    this.invFreq = ropeInverseFrequencies(model.config);
    const sample = model.graph.ops.find((op) => op.op === 'sample');
    const head = model.graph.ops.findLast((op) => op.op === 'linear');
    if (!sample || head?.op !== 'linear' || !model.graph.ops.some((op) => op.op === 'gather_last')) throw new BackendError(this.name, 'the graph has no gather_last, LM head or sample op');
    this.logitsActivation = head.out;
    // The rows per LM-head call come from the logits' full width (a tensor-parallel rank's slice is gathered to it).
    this.logitsChunkRows = logitsRowsPerChunk(model.graph.activations[sample.logits]!.cols, this.options.logitsChunkBytes);
    this.sampleTurns.rowsPerTurn = Math.max(1, Math.floor(sampledPerTurn / model.config.vocabSize));
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
    // The ops from gather_last on (final norm, LM head, sampling) run over the sequences whose
    // token is used, a bounded number of rows at a time, so no step holds S x vocab logits.
    const seqs = sampledSeqs(batch.sampling, numSeqs);
    const headRows = Math.min(this.logitsChunkRows, seqs.length);
    let rowsNow = headRows;
    const buffers = new Map<string, Float32Array>();
    for (const [name, a] of Object.entries(this.graph.activations)) {
      buffers.set(name, new Float32Array((a.rows === 'tokens' ? numTokens : headRows) * a.cols));
    }
    const rowsOf = (name: string) => (this.graph.activations[name]!.rows === 'tokens' ? numTokens : rowsNow);
    const buf = (name: string) => buffers.get(name)!;
    const ops = this.graph.ops;
    const headStart = ops.findIndex((op) => op.op === 'gather_last');
    for (const op of ops.slice(0, headStart)) await this.runOp(op, batch, buf, rowsOf);
    const output = emptySampleOutput(batch.sampling);
    for (const part of chunksOf(seqs, this.logitsChunkRows)) {
      rowsNow = part.length;
      for (const op of ops.slice(headStart)) {
        if (op.op === 'gather_last') {
          gatherRows(buf(op.x), this.graph.activations[op.x]!.cols, batch.queryStart, part, buf(op.out));
        } else if (op.op === 'sample') {
          await batch.sampling.tokenMask?.ready;
          if (this.collectives && this.collectives.rank !== 0) continue;
          await sampleRowsInTurns(buf(op.logits), this.config.vocabSize, batch.sampling, part, output, this.sampleTurns);
        } else {
          if (op.op === 'linear' && op.out === this.logitsActivation) this.maxLogitsRows = Math.max(this.maxLogitsRows, part.length);
          await this.runOp(op, batch, buf, rowsOf);
        }
      }
    }
    await batch.sampling.tokenMask?.ready;
    if (batch.promptLogprobs) output.promptLogprobs = this.promptLogprobs(batch, buf);
    return output;
  }

  private async runOp(op: GraphOp, batch: ForwardBatch, buf: (name: string) => Float32Array, rowsOf: (name: string) => number): Promise<void> {
    if (op.op === 'linear') {
      await this.linearInTurns(buf(op.x), this.weights.get(op.weight)!, rowsOf(op.x), this.graph.activations[op.x]!.cols, buf(op.out));
      return;
    }
    this.run(op, batch, buf, rowsOf);
    if (op.op === 'attention') await yieldToEventLoop();
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
      case 'all_reduce':
        return this.collective().allReduce(buf(op.x));
      case 'all_gather':
        return this.collective().allGather(buf(op.x), buf(op.out), rowsOf(op.x), op.parts);
      case 'linear':
      case 'sample':
      case 'gather_last':
        throw new BackendError(this.name, `${op.op} runs in forward(), over row chunks or in turns`);
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

/** out row j = x's row of the last token of sequence seqs[j]. */
function gatherRows(x: Float32Array, cols: number, queryStart: Int32Array, seqs: Int32Array, out: Float32Array): void {
  seqs.forEach((s, j) => {
    const t = queryStart[s + 1]! - 1;
    out.set(x.subarray(t * cols, (t + 1) * cols), j * cols);
  });
}
