import { availableParallelism } from 'node:os';
import type * as Ort from 'onnxruntime-node';
import type { Backend, BackendOptions, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, StepOutput } from '../../src/engine/backend.js';
import { validateForwardBatch } from '../../src/engine/forward-batch.js';
import { hostKvCapacity, kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import type { LlamaConfig, WeightDType } from '../../src/model/config.js';
import type { LlamaGraph } from '../../src/model/graph.js';
import { bytesPerElement, toFloat32 } from '../../src/model/dtype.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { sampleLogits } from '../shared/host-sampler.js';
import { hostPromptLogprobs } from '../shared/prompt-logprobs.js';
import { layerPrefix, type WeightSource } from '../../src/model/weights.js';
import { BackendError } from '../../src/errors.js';
import { planAttention } from './attention-plan.js';
import { blocksFromGguf, ggmlBlockSize, zeroCode, type GgmlBlockType, type QuantizedBlocks } from './ggml-blocks.js';
import { Presets, SingleBar } from 'cli-progress';
import { BlockPool } from './block-pool.js';
import { blockTypeOf, storedBytes, type WeightFormat } from './linear-weights.js';
import { attentionGroups, buildSegmentModel, segmentOps, stepInputs, stepOutputs, type Segment } from './segment-graph.js';

export type OrtModule = Pick<typeof Ort, 'InferenceSession' | 'Tensor' | 'env'>;

export interface CpuBackendOptions extends BackendOptions {
  /** Upper bound on the weight bytes compiled into one ORT session (one run each per step). */
  segmentBytes?: number;
  /** ORT's per-node profiling, written as JSON files starting with this prefix when the backend closes (scripts/profile-cpu.ts). */
  profilePrefix?: string;
  /** A progress bar on stderr while weights are quantized and compiled (default: when stderr is a terminal). */
  progress?: boolean;
  /** Extra ORT session options, for experiments (scripts/profile-cpu.ts). */
  sessionOptions?: Partial<Ort.InferenceSession.SessionOptions>;
}

const defaultSegmentBytes = 1.25 * 2 ** 30;

/**
 * The Llama graph on onnxruntime-node's CPU execution provider. Consecutive layers are compiled
 * into a few ORT sessions ("segments": a 1B model is one or two), so a step is a handful of
 * async session runs: projections and the lm-head as prepacked GEMMs, norms and rotary as
 * fused element-wise ops, attention as batched MatMul/Softmax over K and V gathered from the
 * paged cache inside the graph. The cache lives in host memory (f32, one [kvHeads, slots,
 * headDim] array per layer for K and for V, so gathered keys need no transpose) and is handed
 * to ORT without copying; each run returns its layers' new K and V, which are written to their
 * slots before the next step.
 */
export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  readonly supportsPromptLogprobs = true;
  private readonly runtime: string;
  private config!: LlamaConfig;
  private format: WeightFormat | undefined;
  /** True when the matrices are a GGUF file's own blocks. */
  private blocksFromFile = false;
  private readonly threads: number;
  private sessions: { segment: Segment; carriedOut: string[]; session: Ort.InferenceSession }[] = [];
  private graph!: LlamaGraph;
  /** The embedding table: raw for f32, else in the weight format's blocks (shared with a tied lm-head, as in a GGUF file). */
  private embedding!: { out: string } & ({ table: Uint8Array; dtype: WeightDType } | { blocks: QuantizedBlocks; type: GgmlBlockType });
  private invFreq!: Float64Array;
  private readonly buffers = new ReusedBuffers();
  private kCache: Float32Array[] = [];
  private vCache: Float32Array[] = [];
  private pageSize = 0;
  private stepInFlight = false;
  private numSlots = 0;

  constructor(
    private readonly ort: OrtModule,
    private readonly options: CpuBackendOptions = {},
  ) {
    this.threads = options.threads ?? availableParallelism();
    this.runtime = `cpu: onnxruntime-node ${ort.env.versions.common} CPU execution provider, ${this.threads} thread${this.threads === 1 ? '' : 's'}`;
  }

  /** Says how the weights run once they are loaded: 8-bit weights change the model's numerics. */
  get description(): string {
    if (this.format === undefined) return this.runtime;
    const bits = { f32: '', q8: '8-bit weights (q8: Q8_0 blocks', q4: '4-bit weights (q4: Q4_0 blocks' }[this.format];
    const origin = this.blocksFromFile ? 'as the GGUF file stores them' : `quantized from ${this.config.dtype}; f32 weights run exact`;
    const weights = this.format === 'f32' ? 'f32 weights' : `${bits}, ${origin})`;
    return `${this.runtime}, ${weights}`;
  }

  async load(model: ModelSpec): Promise<void> {
    const { config, weights } = model;
    this.config = config;
    this.invFreq = ropeInverseFrequencies(config);
    this.format = this.options.cpuWeights ?? storedFormat(model) ?? (config.dtype === 'f32' ? 'f32' : 'q8');
    const embeddingOp = model.graph.ops.find((op) => op.op === 'embedding');
    if (!embeddingOp) throw new BackendError(this.name, 'the graph has no embedding op');
    const embedInfo = weights.info(embeddingOp.table);
    if (!embedInfo) throw new BackendError(this.name, `${weights.description}: tensor "${embeddingOp.table}" is missing`);
    const format = this.format;
    // Quantized formats: every matrix is made into blocks on worker threads (dummy weights are
    // generated there from their recipe, never as BF16 bytes); the embedding table's blocks are
    // kept for lookups and shared with a tied lm-head.
    const pool = new BlockPool(this.threads);
    const bar = (this.options.progress ?? process.stderr.isTTY) ? loadProgress(model.graph, format) : null;
    const blocksOf = async (name: string): Promise<QuantizedBlocks> => {
      if (format === 'f32') throw new Error('f32 weights are not blocks');
      if (name === embeddingOp.table && this.embedding !== undefined && 'blocks' in this.embedding) return this.embedding.blocks;
      const info = weights.info(name)!;
      // A GGUF file's own Q8_0 / Q4_0 blocks run as they are, never requantized.
      const stored = weights.storedType?.(name) === ggmlTypeName[blockTypeOf(format)] ? await weights.storedBlocks?.(name) : null;
      if (stored) {
        this.blocksFromFile = true;
        bar?.increment(storedBytes(info.shape[0]!, info.shape[1]!, format) / 2 ** 20);
        return blocksFromGguf(blockTypeOf(format), stored.bytes);
      }
      const recipe = weights.deviceRecipe?.(name);
      const source = recipe ? { recipe } : { bytes: await weights.read(name) };
      const blocks = await pool.quantize(blockTypeOf(format), info.shape[0]!, info.shape[1]!, info.dtype, source);
      bar?.increment(storedBytes(info.shape[0]!, info.shape[1]!, format) / 2 ** 20);
      return blocks;
    };
    let table: Uint8Array | null = null;
    try {
      if (format === 'f32') {
        table = await weights.read(embeddingOp.table);
        this.embedding = { table, dtype: embedInfo.dtype, out: embeddingOp.out };
      } else {
        this.embedding = { blocks: await blocksOf(embeddingOp.table), type: blockTypeOf(format), out: embeddingOp.out };
      }
      await this.compile(model, table, blocksOf);
    } finally {
      bar?.stop();
      await pool.close();
    }
  }

  private async compile(model: ModelSpec, table: Uint8Array | null, blocksOf: (name: string) => Promise<QuantizedBlocks>): Promise<void> {
    const { config, weights } = model;
    const embeddingTable = model.graph.ops.find((op) => op.op === 'embedding')!.table;
    this.graph = model.graph;
    const sessionOptions: Ort.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      intraOpNumThreads: this.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      enableMemPattern: false,
      logSeverityLevel: 3,
      ...(this.options.profilePrefix ? { enableProfiling: true, profileFilePrefix: this.options.profilePrefix } : {}),
      ...this.options.sessionOptions,
    };
    // A tied lm-head reads the embedding table again: hand it the bytes (or blocks) already held.
    const source: WeightSource = {
      description: weights.description,
      random: weights.random,
      info: (name) => weights.info(name),
      read: (name) => (name === embeddingTable && table ? Promise.resolve(table) : weights.read(name)),
      close: () => weights.close(),
    };
    for (const segment of planSegments(model.graph, this.format!, this.options.segmentBytes ?? defaultSegmentBytes)) {
      const bytes = await buildSegmentModel(config, model.graph, source, segment, this.format!, blocksOf);
      const { carriedOut } = segmentOps(model.graph, segment);
      this.sessions.push({ segment, carriedOut, session: await this.ort.InferenceSession.create(bytes, sessionOptions) });
    }
  }

  kvCapacity(budget: KvBudget): number {
    return hostKvCapacity(kvBytesPerToken(this.config, 4), budget);
  }

  async allocateKvCache(spec: KvCacheSpec): Promise<void> {
    this.pageSize = spec.pageSize;
    this.numSlots = spec.numPages * spec.pageSize;
    const size = this.numSlots * this.config.numKvHeads * this.config.headDim;
    this.kCache = Array.from({ length: this.config.numLayers }, () => new Float32Array(size));
    this.vCache = Array.from({ length: this.config.numLayers }, () => new Float32Array(size));
  }

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    this.validate(batch);
    // Steps share the reused output buffers, so they must not overlap.
    if (this.stepInFlight) throw new BackendError(this.name, 'forward() called while another step is running');
    this.stepInFlight = true;
    try {
      return await this.step(batch);
    } finally {
      this.stepInFlight = false;
    }
  }

  private async step(batch: ForwardBatch): Promise<StepOutput> {
    const { Tensor } = this.ort;
    const c = this.config;
    const numTokens = batch.tokenIds.length;
    const numSeqs = batch.kvLens.length;
    const kvCols = c.numKvHeads * c.headDim;
    const plan = planAttention(batch, this.pageSize, c.numHeads / c.numKvHeads);
    const half = c.headDim / 2;
    const [cos, sin] = this.rotaryTables(batch.positions);
    // The lm-head runs on each sequence's last row, then on the prompt rows whose log-probs are asked.
    const promptRows = wantedPromptRows(batch);
    const headRows = new Int32Array(numSeqs + promptRows.length);
    headRows.set(batch.queryStart.subarray(1).map((end) => end - 1));
    headRows.set(promptRows, numSeqs);
    const shared: Record<string, Ort.Tensor> = {
      [stepInputs.cos]: new Tensor('float32', cos, [numTokens, half]),
      [stepInputs.sin]: new Tensor('float32', sin, [numTokens, half]),
      [stepInputs.outIndex]: new Tensor('int32', plan.outIndex, [numTokens]),
      [stepInputs.lastIndex]: new Tensor('int32', headRows, [headRows.length]),
    };
    for (const name of attentionGroups) {
      const g = plan.groups[name];
      const names = stepInputs.group(name);
      const keys = g.pastLen + g.queryLen;
      shared[names.queryIndex] = new Tensor('int32', g.queryIndex, [g.numSeqs, g.queryLen]);
      shared[names.pastIndex] = new Tensor('int32', g.pastIndex, [g.numSeqs, g.pastLen]);
      shared[names.mask] = new Tensor('float32', g.mask, [1, g.numSeqs, g.mask.length / (g.numSeqs * keys), keys]);
      shared[names.keySplit] = new Tensor('int64', g.keySplit, [2]);
    }
    // Outputs land in buffers kept across steps: fresh memory is costly here (page faults), and
    // a greedy step without log-probs fetches only the in-graph argmax, not [S, vocab] logits.
    const wantLogits = needsLogits(batch) || promptRows.length > 0;
    const rowsOf = (activation: string) => (this.graph.activations[activation]!.rows === 'tokens' ? numTokens : numSeqs);
    const embedCols = this.graph.activations[this.embedding.out]!.cols;
    shared[stepInputs.embedded] = new Tensor('float32', this.embed(batch.tokenIds, this.buffers.f32('embedded', numTokens * embedCols)), [numTokens, embedCols]);
    let result: StepOutput | null = null;
    for (const [i, { segment, carriedOut, session }] of this.sessions.entries()) {
      const feeds: Record<string, Ort.Tensor> = { ...shared };
      const fetches: Record<string, Ort.Tensor> = {};
      const kNew: Float32Array[] = [];
      const vNew: Float32Array[] = [];
      for (let l = segment.firstLayer; l < segment.endLayer; l++) {
        feeds[stepInputs.kCache(l)] = new Tensor('float32', this.kCache[l]!, [c.numKvHeads, this.numSlots, c.headDim]);
        feeds[stepInputs.vCache(l)] = new Tensor('float32', this.vCache[l]!, [c.numKvHeads, this.numSlots, c.headDim]);
        kNew.push(this.buffers.f32(`k${l}`, numTokens * kvCols));
        vNew.push(this.buffers.f32(`v${l}`, numTokens * kvCols));
        fetches[stepOutputs.k(l)] = new Tensor('float32', kNew.at(-1)!, [numTokens, kvCols]);
        fetches[stepOutputs.v(l)] = new Tensor('float32', vNew.at(-1)!, [numTokens, kvCols]);
      }
      // Activations handed to the next segment alternate between two buffers so no run reads what it writes.
      for (const name of carriedOut) {
        const shape = [rowsOf(name), this.graph.activations[name]!.cols];
        const out = new Tensor('float32', this.buffers.f32(`${name}${i % 2}`, shape[0]! * shape[1]!), shape);
        fetches[stepOutputs.carried(name)] = out;
        shared[stepInputs.carried(name)] = out;
      }
      let logits: Float32Array | null = null;
      let greedy: BigInt64Array | null = null;
      if (segment.withHead && wantLogits) {
        // Prompt rows' logits get memory of their own, returned once the step ends, not kept at their peak.
        logits = promptRows.length > 0 ? new Float32Array(headRows.length * c.vocabSize) : this.buffers.f32('logits', numSeqs * c.vocabSize);
        fetches[stepOutputs.logits] = new Tensor('float32', logits, [headRows.length, c.vocabSize]);
      } else if (segment.withHead) {
        greedy = new BigInt64Array(numSeqs);
        fetches[stepOutputs.greedy] = new Tensor('int64', greedy, [numSeqs]);
      }
      const used = Object.fromEntries(session.inputNames.map((n) => [n, feeds[n]!]));
      await session.run(used, fetches);
      for (let l = segment.firstLayer; l < segment.endLayer; l++) {
        this.writeKv(this.kCache[l]!, kNew[l - segment.firstLayer]!, batch.slotMapping);
        this.writeKv(this.vCache[l]!, vNew[l - segment.firstLayer]!, batch.slotMapping);
      }
      if (logits) {
        await batch.sampling.tokenMask?.ready;
        result = sampleLogits(logits, c.vocabSize, batch.sampling);
        if (batch.promptLogprobs) result.promptLogprobs = this.promptLogprobs(batch, promptRows, logits);
      }
      if (greedy) result = { tokens: Int32Array.from(greedy, Number), logprobs: null, topLogprobs: null };
    }
    return result!;
  }

  /** Reads ForwardBatch.promptLogprobs off the logits rows after the sequences' own (in the order of `promptRows`). */
  private promptLogprobs(batch: ForwardBatch, promptRows: Int32Array, logits: Float32Array) {
    const vocab = this.config.vocabSize;
    const numSeqs = batch.kvLens.length;
    const headRowOf = new Map<number, number>();
    promptRows.forEach((row, i) => headRowOf.set(row, numSeqs + i));
    return hostPromptLogprobs(batch.promptLogprobs!, (row) => {
      const headRow = headRowOf.get(row)!;
      return logits.subarray(headRow * vocab, (headRow + 1) * vocab);
    });
  }

  async close(): Promise<void> {
    for (const { session } of this.sessions) {
      if (this.options.profilePrefix) session.endProfiling();
      await session.release();
    }
    this.sessions = [];
    this.kCache = [];
    this.vCache = [];
  }

  private validate(batch: ForwardBatch): void {
    if (this.sessions.length === 0) throw new BackendError(this.name, 'forward() before load()');
    if (this.numSlots === 0) throw new BackendError(this.name, 'forward() before allocateKvCache()');
    validateForwardBatch(this.name, batch, { vocabSize: this.config.vocabSize, numPages: this.numSlots / this.pageSize, pageSize: this.pageSize });
  }

  private embed(tokenIds: Int32Array, out: Float32Array): Float32Array {
    const h = out.length / tokenIds.length;
    if ('blocks' in this.embedding) {
      const { blocks, type } = this.embedding;
      const zero = zeroCode[type];
      const blocksPerRow = Math.ceil(h / ggmlBlockSize);
      tokenIds.forEach((id, t) => {
        const codes = id * blocksPerRow * ggmlBlockSize;
        const scales = id * blocksPerRow;
        for (let i = 0; i < h; i++) out[t * h + i] = (blocks.codes[codes + i]! - zero) * blocks.scales[scales + (i >> 5)]!;
      });
      return out;
    }
    const { table, dtype } = this.embedding;
    const rowBytes = h * bytesPerElement[dtype];
    tokenIds.forEach((id, t) => out.set(toFloat32(table.subarray(id * rowBytes, (id + 1) * rowBytes), dtype), t * h));
    return out;
  }

  /** cos and sin of position * invFreq[i], [T, headDim / 2], computed in f64 as the reference does. */
  private rotaryTables(positions: Int32Array): [Float32Array, Float32Array] {
    const half = this.invFreq.length;
    const cos = new Float32Array(positions.length * half);
    const sin = new Float32Array(positions.length * half);
    positions.forEach((p, t) => {
      for (let i = 0; i < half; i++) {
        const angle = p * this.invFreq[i]!;
        cos[t * half + i] = Math.cos(angle);
        sin[t * half + i] = Math.sin(angle);
      }
    });
    return [cos, sin];
  }

  /** rows [T, kvHeads * headDim] into the cache's [kvHeads, slots, headDim] layout. */
  private writeKv(cache: Float32Array, rows: Float32Array, slotMapping: Int32Array): void {
    const { numKvHeads, headDim } = this.config;
    slotMapping.forEach((slot, t) => {
      for (let h = 0; h < numKvHeads; h++) {
        const from = (t * numKvHeads + h) * headDim;
        cache.set(rows.subarray(from, from + headDim), (h * this.numSlots + slot) * headDim);
      }
    });
  }
}

/** Greedy steps without log-probs, penalties or token masks can take the in-graph argmax instead of the logits. */
function needsLogits(batch: ForwardBatch): boolean {
  const s = batch.sampling;
  return s.penalties !== null || s.tokenMask != null || s.temperature.some((t) => t > 0) || s.logprobs.some((k) => k >= 0);
}

/** The token rows whose logits ForwardBatch.promptLogprobs asks for. */
function wantedPromptRows(batch: ForwardBatch): Int32Array {
  const targets = batch.promptLogprobs?.targets;
  if (!targets) return new Int32Array(0);
  const rows: number[] = [];
  targets.forEach((target, row) => {
    if (target >= 0) rows.push(row);
  });
  return Int32Array.from(rows);
}

/** Named Float32Arrays that grow but are never reallocated per step; each call returns a view of the asked length. */
class ReusedBuffers {
  private readonly arrays = new Map<string, Float32Array>();

  f32(name: string, length: number): Float32Array {
    let array = this.arrays.get(name);
    if (!array || array.length < length) {
      array = new Float32Array(Math.max(length, Math.ceil((array?.length ?? 0) * 1.5)));
      this.arrays.set(name, array);
    }
    return array.subarray(0, length);
  }
}

/** Splits the layers into runs of at most `maxBytes` of stored weights; the last one also holds the lm-head. */
export function planSegments(graph: LlamaGraph, format: WeightFormat, maxBytes: number): Segment[] {
  const numLayers = graph.layerStart.length - 1;
  /** Stored bytes of the linear ops in ops[from, to). */
  const linearBytes = (from: number, to: number) =>
    graph.ops
      .slice(from, to)
      .reduce((sum, op) => (op.op === 'linear' ? sum + storedBytes(graph.activations[op.out]!.cols, graph.activations[op.x]!.cols, format) : sum), 0);
  const layerBytes = (l: number) => linearBytes(graph.layerStart[l]!, graph.layerStart[l + 1]!);
  const headBytes = linearBytes(graph.layerStart[numLayers]!, graph.ops.length);
  const segments: Segment[] = [];
  let first = 0;
  let bytes = 0;
  for (let l = 0; l < numLayers; l++) {
    if (l > first && bytes + layerBytes(l) > maxBytes) {
      segments.push({ firstLayer: first, endLayer: l, withHead: false });
      first = l;
      bytes = 0;
    }
    bytes += layerBytes(l);
  }
  if (bytes + headBytes > maxBytes && first < numLayers) {
    segments.push({ firstLayer: first, endLayer: numLayers, withHead: false });
    first = numLayers;
  }
  segments.push({ firstLayer: first, endLayer: numLayers, withHead: true });
  return segments;
}

/** A terminal progress bar over the MiB of blocks a quantized load makes (the embedding table included). */
function loadProgress(graph: LlamaGraph, format: WeightFormat): SingleBar | null {
  if (format === 'f32') return null;
  const embedding = graph.ops.find((op) => op.op === 'embedding')!;
  const table = graph.activations[embedding.out]!.cols;
  let total = 0;
  for (const op of graph.ops) if (op.op === 'linear') total += storedBytes(graph.activations[op.out]!.cols, graph.activations[op.x]!.cols, format);
  // A tied lm-head reuses the table's blocks; an untied one is a linear op of its own.
  const tied = graph.ops.some((op) => op.op === 'linear' && op.weight === embedding.table);
  const lmHead = graph.ops.findLast((op) => op.op === 'linear');
  if (!tied && lmHead?.op === 'linear') total += storedBytes(graph.activations[lmHead.out]!.cols, table, format);
  const bar = new SingleBar(
    { format: `cpu: quantizing weights to ${format} [{bar}] {percentage}% | {value}/{total} MiB | {duration}s`, stream: process.stderr, clearOnComplete: false, hideCursor: false, formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? Math.round(v).toString() : String(v)) },
    Presets.shades_classic,
  );
  bar.start(Math.round(total / 2 ** 20), 0);
  return bar;
}

const ggmlTypeName: Record<GgmlBlockType, string> = { q8_0: 'Q8_0', q4_0: 'Q4_0' };

/** A GGUF source whose matrices are Q8_0 or Q4_0 blocks runs at those bits unless --cpu-weights says otherwise. */
function storedFormat(model: ModelSpec): WeightFormat | undefined {
  const type = model.weights.storedType?.(`${layerPrefix(0)}.self_attn.q_proj.weight`);
  return type === 'Q8_0' ? 'q8' : type === 'Q4_0' ? 'q4' : undefined;
}
