import { availableParallelism } from 'node:os';
import type * as Ort from 'onnxruntime-node';
import type { Backend, BackendOptions, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, RankCollectives, StepOutput } from '../../src/engine/backend.js';
import { validateForwardBatch } from '../../src/engine/forward-batch.js';
import { hostKvCapacity, kvBytesPerToken, touchPages } from '../../src/engine/kv-capacity.js';
import type { LlamaConfig } from '../../src/model/config.js';
import type { LlamaGraph } from '../../src/model/graph.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { emptySampleOutput, sampleRowsInTurns } from '../shared/host-sampler.js';
import { chunksOf, logitsRowsPerChunk, sampledSeqs } from '../shared/logits-rows.js';
import { emptyPromptLogprobs, wantedPromptRows, writePromptLogprob } from '../shared/prompt-logprobs.js';
import { layerPrefix, type WeightSource } from '../../src/model/weights.js';
import { BackendError } from '../../src/errors.js';
import { blocksFromGguf, ggmlBlockSize, type GgmlBlockType, type QuantizedBlocks } from './ggml-blocks.js';
import { BlockArena, BlockPool, SegmentArenas, blockBytes, sharedBlocks } from './block-pool.js';
import { HostOps, type HostStep } from './host-ops.js';
import { nativeLayerKernels, typescriptLayerKernels, type LayerKernels } from './layer-kernels.js';
import { HostLinears, hostKernelFor, linearGroups, type BlockKernel, type LinearActivations } from './host-linears.js';
import { nativeBlocks } from './native-blocks.js';
import { blockTypeOf, storedBytes, type WeightFormat } from './linear-weights.js';
import { embedRows, type EmbeddingTable } from './embedding-rows.js';
import { emptyLayerCache, kvCacheFormat, writeKvRows, type LayerCache } from './kv-store.js';
import { buildSegmentModel, type HostPlacement, kvBlockSize, kvBytesPerValue, kvHasScales, segmentLinearGroups, segmentOps, stepInputs, stepOutputs, type KvCacheFormat, type Segment } from './segment-graph.js';
import { loadProgress } from './load-progress.js';
import { ReusedBuffers } from './reused-buffers.js';
import { rotaryTables, sessionStepInputs } from './step-inputs.js';
import { defaultSegmentBytes, planSegments, segmentBlockBytes } from './segment-plan.js';
import { segmentSessionOptions } from './session-options.js';

export type OrtModule = Pick<typeof Ort, 'InferenceSession' | 'Tensor' | 'env'>;

interface SegmentSession {
  segment: Segment;
  carriedIn: string[];
  carriedOut: string[];
  session: Ort.InferenceSession;
}

export interface CpuBackendOptions extends BackendOptions {
  /** Upper bound on the weight bytes compiled into one ORT session (one run each per step); default: segment-plan.ts's defaultSegmentBytes. */
  segmentBytes?: number;
  /** ORT's per-node profiling, written as JSON files starting with this prefix when the backend closes (scripts/profile-cpu.ts). */
  profilePrefix?: string;
  /** A progress bar on stderr while weights are quantized and compiled (default: when stderr is a terminal). */
  progress?: boolean;
  /** ORT session options over the backend's own, for experiments (scripts/bench-cpu-options.ts); `extra` entries (flat, dotted keys) are merged one by one. */
  sessionOptions?: Partial<Ort.InferenceSession.SessionOptions>;
  /** Set on a tensor-parallel rank (backends/tensor-parallel): runs the graph's collectives between sessions, and only rank 0 samples. */
  collectives?: RankCollectives;
  /** The most logits the LM head produces in one run (default: backends/shared/logits-rows.ts). */
  logitsChunkBytes?: number;
  /** With cpuGemm 'native': the kernel of the host linears (default: the addon's tiled kernel of the load's blocks, host-linears.ts's hostKernelFor). */
  hostKernel?: BlockKernel;
  /** With cpuGemm 'native': the kernels of the other host ops (default: the addon's, else TypeScript's; layer-kernels.ts). */
  layerKernels?: LayerKernels;
}

/** What the sessions of one step share: its batch, inputs, the activations passed between them, and the head's current rows. */
interface StepRun {
  batch: ForwardBatch;
  shared: Record<string, Ort.Tensor>;
  carried: Map<string, Float32Array>;
  headRows: number;
  /** The token rows of the current head run (gather_last's rows). */
  headTokenRows: Int32Array;
  /** cos and sin of each token's rotary angles, [tokens, headDim / 2]. */
  cos: Float32Array;
  sin: Float32Array;
  /** The host ops' view of the step, once one runs. */
  host?: HostStep;
}

/**
 * The Llama graph on the CPU, two ways. With 8- or 4-bit weights and the native/cpu addon
 * (--cpu-gemm auto or native) the ops run on the host, one addon call each: the linears through
 * its tile kernels (host-linears.ts), the rest through its layer ops (host-ops.ts), attention
 * reading the paged cache directly. Otherwise (f32 weights, --cpu-gemm ort) consecutive layers
 * are compiled into a few onnxruntime-node sessions ("segments": a 1B model is one or two), so
 * a step is a handful of session runs: projections and the lm-head as prepacked GEMMs, norms
 * and rotary as fused element-wise ops, attention as batched MatMul/Softmax over K and V
 * gathered from the paged cache inside the graph (with an 8- or 4-bit KV cache the host path
 * keeps rotary with attention in such sessions). The cache is host memory, one [kvHeads, slots,
 * headDim] array per layer for K and for V, handed to ORT without copying.
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
  private sessions: SegmentSession[] = [];
  private graph!: LlamaGraph;
  private embedding!: EmbeddingTable;
  private invFreq!: Float64Array;
  private readonly buffers = new ReusedBuffers();
  private readonly kvFormat: KvCacheFormat;
  private kCache: LayerCache[] = [];
  private vCache: LayerCache[] = [];
  private pageSize = 0;
  private stepInFlight = false;
  private numSlots = 0;
  /** Where the head (gather_last: final norm, LM head, sampling) begins in the graph; a session of its own. */
  private headStart = 0;
  private logitsChunkRows = 1;
  /** The most logits rows one LM-head run produced since load (what ORT holds for logits: this x vocab floats). */
  maxLogitsRows = 0;
  /** --cpu-gemm native: the linear ops run on the host, through `hostKernel` (chosen at load, by the weights' blocks). */
  private hostGemm = false;
  private hostKernel: BlockKernel | null = null;
  private hostLinears: HostLinears | null = null;
  /** With --cpu-gemm native the ops between the linears run on the host too (all of them with an f32 KV cache). */
  private hostOps: HostOps | null = null;
  private placement: HostPlacement = 'collectives';
  private hostLayerKernels: LayerKernels | undefined;
  private loaded = false;

  constructor(
    private readonly ort: OrtModule,
    private readonly options: CpuBackendOptions = {},
  ) {
    this.threads = options.threads ?? availableParallelism();
    this.kvFormat = kvCacheFormat(options.kvCacheDtype);
    this.checkCpuGemm();
    const kv = this.kvFormat === 'f32' ? '' : `, ${this.kvFormat} KV cache`;
    this.runtime = `cpu: onnxruntime-node ${ort.env.versions.common} CPU execution provider, ${this.threads} thread${this.threads === 1 ? '' : 's'}${kv}`;
  }

  /** The kernels of the host ops besides the linears: the addon's where it is built. */
  private get layerKernels(): LayerKernels {
    // Tensor-parallel ranks each compute on their own thread (the addon's pool takes one caller at a time).
    return (this.hostLayerKernels ??= this.options.layerKernels ?? (nativeBlocks ? nativeLayerKernels(this.options.collectives ? 1 : this.threads) : typescriptLayerKernels));
  }

  /** --cpu-gemm: auto, ort, or native, which needs the addon (or a given kernel). */
  private checkCpuGemm(): void {
    const gemm = this.options.cpuGemm ?? 'auto';
    if (gemm !== 'auto' && gemm !== 'ort' && gemm !== 'native') throw new BackendError(this.name, `--cpu-gemm ${String(gemm)}: not supported (choose auto, ort or native)`);
    if (gemm === 'native' && !this.options.hostKernel && !nativeBlocks) throw new BackendError(this.name, '--cpu-gemm native: the native/cpu addon is not loaded; it is built by `npm ci` where cmake and a C++ compiler are present (SLUICE_CPU_ADDON=off disables it)');
  }

  /** Whether the layers run on the host (--cpu-gemm native, or auto with the addon and 8- or 4-bit weights) and which ops stay in sessions. */
  private placeOps(format: WeightFormat): void {
    const gemm = this.options.cpuGemm ?? 'auto';
    const addon = this.options.hostKernel !== undefined || nativeBlocks !== null;
    this.hostGemm = gemm === 'native' || (gemm === 'auto' && addon && format !== 'f32');
    this.placement = !this.hostGemm ? 'collectives' : this.kvFormat === 'f32' ? 'layers' : 'linears';
  }

  /** Says how the weights run once they are loaded: 8-bit weights change the model's numerics. */
  get description(): string {
    const rest = this.placement === 'layers' ? `, the other layer ops too (${this.layerKernels.name}), no ORT session` : ', the other layer ops too but rotary and attention (ORT reads the cache codes)';
    const linears = this.hostKernel ? `, linears on the host: ${this.hostKernel.name}${rest}` : this.hostGemm ? ', linears on the host (--cpu-gemm native)' : '';
    if (this.format === undefined) return `${this.runtime}${linears}`;
    const bits = { f32: '', q8: '8-bit weights (q8: Q8_0 blocks', q4: '4-bit weights (q4: Q4_0 blocks' }[this.format];
    const origin = this.blocksFromFile ? 'as the GGUF file stores them' : `quantized from ${this.config.dtype}; f32 weights run exact`;
    const weights = this.format === 'f32' ? 'f32 weights' : `${bits}, ${origin})`;
    return `${this.runtime}${linears}, ${weights}`;
  }

  async load(model: ModelSpec): Promise<void> {
    const { config, weights } = model;
    const kvBlock = kvBlockSize(config.headDim);
    if (kvHasScales(this.kvFormat) && (config.headDim % kvBlock !== 0 || kvBlock % 2 !== 0)) {
      throw new BackendError(this.name, `--kv-cache-dtype ${this.kvFormat} needs a head size that is a multiple of 32 (or even and below 32); this model's is ${config.headDim}`);
    }
    this.config = config;
    this.invFreq = ropeInverseFrequencies(config);
    this.format = this.options.cpuWeights ?? storedFormat(model) ?? (config.dtype === 'f32' ? 'f32' : 'q8');
    this.placeOps(this.format);
    if (this.hostGemm) {
      const why = this.options.cpuWeights ? `--cpu-weights ${this.format}` : storedFormat(model) ? `the GGUF file's blocks (${this.format})` : `${this.format}, the default for ${config.dtype} checkpoints`;
      // The addon's kernels share one thread pool per process, which takes one caller at a time:
      // tensor-parallel ranks (worker threads that run side by side) each compute on their own thread.
      this.hostKernel = hostKernelFor(this.format, why, this.options.collectives ? 1 : this.threads, this.options.hostKernel);
    }
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
    const type = format === 'f32' ? null : blockTypeOf(format);
    /** Matrices stacked along their rows (q/k/v, gate/up), written side by side into one shared buffer. */
    const blocksOf = async (names: string[], arena?: BlockArena): Promise<QuantizedBlocks> => {
      if (type === null) throw new Error('f32 weights are not blocks');
      if (names.length === 1 && names[0] === embeddingOp.table && this.embedding !== undefined && 'blocks' in this.embedding) return this.embedding.blocks;
      const infos = names.map((name) => weights.info(name)!);
      const cols = infos[0]!.shape[1]!;
      const blocksPerRow = Math.ceil(cols / ggmlBlockSize);
      const progress = (rows: number) => bar?.increment(storedBytes(rows, cols, format) / 2 ** 20);
      // A GGUF file's own Q8_0 / Q4_0 blocks run as they are, never requantized.
      const single = names.length === 1 ? await storedBlocksOf(names[0]!) : null;
      if (single) {
        progress(infos[0]!.shape[0]!);
        return single;
      }
      const rowsTotal = infos.reduce((n, info) => n + info.shape[0]!, 0);
      // The embedding's blocks are kept for lookups; a segment's live only until its session is made.
      const into = arena ? arena.take(rowsTotal, cols) : sharedBlocks(rowsTotal, cols);
      // Every matrix is handed to the pool at once, so the workers have the whole group queued.
      const firstRows = infos.map((_, i) => infos.slice(0, i).reduce((n, info) => n + info.shape[0]!, 0));
      await Promise.all(
        names.map(async (name, i) => {
          const rows = infos[i]!.shape[0]!;
          const at = { codes: into.codes.subarray(firstRows[i]! * blocksPerRow * ggmlBlockSize), scales: into.scales.subarray(firstRows[i]! * blocksPerRow) };
          const stored = await storedBlocksOf(name);
          if (stored) {
            at.codes.set(stored.codes);
            at.scales.set(stored.scales);
          } else {
            const recipe = weights.deviceRecipe?.(name);
            await pool.quantize(type, rows, cols, infos[i]!.dtype, recipe ? { recipe } : { bytes: await weights.read(name) }, at);
          }
          progress(rows);
        }),
      );
      return into;
    };
    const storedBlocksOf = async (name: string): Promise<QuantizedBlocks | null> => {
      if (type === null || weights.storedType?.(name) !== ggmlTypeName[type]) return null;
      const stored = await weights.storedBlocks?.(name);
      if (!stored) return null;
      this.blocksFromFile = true;
      return blocksFromGguf(type, stored.bytes);
    };
    let table: Uint8Array | null = null;
    try {
      const rows = { out: embeddingOp.out, vocabStart: embeddingOp.vocabStart ?? 0, rows: embedInfo.shape[0]! };
      if (format === 'f32') {
        table = await weights.read(embeddingOp.table);
        this.embedding = { ...rows, table, dtype: embedInfo.dtype };
      } else {
        this.embedding = { ...rows, blocks: await blocksOf([embeddingOp.table]), type: blockTypeOf(format) };
      }
      await this.compile(model, table, blocksOf);
    } finally {
      bar?.stop();
      await pool.close();
    }
  }

  /**
   * Makes a session per segment. With blocks, the next segment's are made on the pool's workers
   * while ORT makes this segment's session (it prepacks on the calling thread): two arenas, the
   * segment's and the next one's, take turns.
   */
  private async compile(model: ModelSpec, table: Uint8Array | null, blocksOf: (names: string[], arena?: BlockArena) => Promise<QuantizedBlocks>): Promise<void> {
    const { config, weights } = model;
    const embeddingTable = model.graph.ops.find((op) => op.op === 'embedding')!.table;
    this.graph = model.graph;
    this.headStart = model.graph.ops.findIndex((op) => op.op === 'gather_last');
    if (this.headStart < 0) throw new BackendError(this.name, 'the graph has no gather_last op');
    this.logitsChunkRows = logitsRowsPerChunk(config.vocabSize, this.options.logitsChunkBytes);
    const defaults = segmentSessionOptions(this.threads, this.options.profilePrefix);
    const sessionOptions = { ...defaults, ...this.options.sessionOptions, extra: { ...defaults.extra, ...this.options.sessionOptions?.extra } };
    // A tied lm-head reads the embedding table again: hand it the bytes (or blocks) already held.
    const source: WeightSource = {
      description: weights.description,
      random: weights.random,
      info: (name) => weights.info(name),
      read: (name) => (name === embeddingTable && table ? Promise.resolve(table) : weights.read(name)),
      close: () => weights.close(),
    };
    if (this.hostKernel) {
      this.hostLinears = await this.prepareHostLinears(model, this.hostKernel, blocksOf);
      this.hostOps = await HostOps.load(model.graph, weights, config, this.layerKernels);
    }
    const segments = planSegments(model.graph, this.format!, this.options.segmentBytes ?? defaultSegmentBytes(model.graph, this.format!), this.placement);
    const arenas = this.format === 'f32' ? null : new SegmentArenas(segments.map((segment) => segmentBlockBytes(model.graph, segment, embeddingTable)));
    /** Blocks asked for ahead of their segment's build, by their stacked names. */
    const ahead = new Map<string, Promise<QuantizedBlocks>>();
    const startBlocks = (index: number) => {
      const segment = segments[index];
      if (!segment || !arenas) return;
      for (const names of segmentLinearGroups(model.graph, segment)) {
        if (names[0] === embeddingTable) continue;
        const blocks = blocksOf(names, arenas.arenaFor(index));
        blocks.catch(() => {}); // awaited (and reported) when its segment is built
        ahead.set(names.join('+'), blocks);
      }
    };
    const order = arenas?.order() ?? segments.map((_, i) => i);
    const sessions: SegmentSession[] = [];
    try {
      for (const [turn, index] of order.entries()) {
        const segment = segments[index]!;
        if (ahead.size === 0) startBlocks(index);
        const segmentBlocksOf = (names: string[]) => ahead.get(names.join('+')) ?? blocksOf(names, arenas?.arenaFor(index));
        const { bytes, externalData } = await buildSegmentModel(config, model.graph, source, segment, this.format!, segmentBlocksOf, this.kvFormat);
        ahead.clear();
        const next = order[turn + 1];
        if (next !== undefined && arenas?.apart(index, next)) startBlocks(next);
        const { carriedIn, carriedOut } = segmentOps(model.graph, segment);
        const session = await this.ort.InferenceSession.create(bytes, { ...sessionOptions, externalData });
        arenas?.arenaFor(index).reset();
        sessions[index] = { segment, carriedIn, carriedOut, session };
      }
    } finally {
      // In segment order; after a failure, whatever was made, for close() to release.
      this.sessions.push(...sessions.filter(Boolean));
    }
    this.loaded = true;
  }

  /** The graph's linear groups' blocks, made one group at a time into one reused arena, handed to the kernel (which keeps its own copy). */
  private async prepareHostLinears(model: ModelSpec, kernel: BlockKernel, blocksOf: (names: string[], arena?: BlockArena) => Promise<QuantizedBlocks>): Promise<HostLinears> {
    const shapeOf = (name: string): [number, number] => {
      const shape = model.weights.info(name)?.shape;
      if (!shape) throw new BackendError(this.name, `${model.weights.description}: tensor "${name}" is missing`);
      return [shape[0]!, shape[1]!];
    };
    const groupBytes = linearGroups(model.graph).map(({ ops }) => blockBytes(ops.reduce((n, op) => n + shapeOf(op.weight)[0], 0), shapeOf(ops[0]!.weight)[1]));
    const arena = new BlockArena(new SharedArrayBuffer(Math.max(0, ...groupBytes)));
    return HostLinears.prepare(model.graph, kernel, shapeOf, (names) => {
      arena.reset();
      return blocksOf(names, arena);
    });
  }

  kvCapacity(budget: KvBudget): number {
    return hostKvCapacity(kvBytesPerToken(this.config, kvBytesPerValue(this.kvFormat, this.config.headDim)), budget);
  }

  async allocateKvCache(spec: KvCacheSpec): Promise<void> {
    this.pageSize = spec.pageSize;
    this.numSlots = spec.numPages * spec.pageSize;
    const size = this.numSlots * this.config.numKvHeads * this.config.headDim;
    const format = this.kvFormat;
    const cache = () => emptyLayerCache(format, size, this.config.headDim);
    this.kCache = Array.from({ length: this.config.numLayers }, cache);
    this.vCache = Array.from({ length: this.config.numLayers }, cache);
    for (const layer of [...this.kCache, ...this.vCache]) touchPages(layer.values, layer.scales);
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
    const c = this.config;
    const numSeqs = batch.kvLens.length;
    const [cos, sin] = rotaryTables(batch.positions, this.invFreq);
    // Host attention reads the batch itself; sessions read its gathered layout.
    const shared = this.placement === 'layers' ? {} : sessionStepInputs(this.ort.Tensor, batch, cos, sin, c, this.pageSize);
    const run: StepRun = { batch, shared, carried: new Map(), headRows: 0, headTokenRows: new Int32Array(0), cos, sin };
    // The decoder layers, sessions and host ops in graph order, up to the head.
    let nextOp = 0;
    for (const [i, entry] of this.sessions.entries()) {
      if (entry.segment.startOp >= this.headStart) break;
      await this.runHostOps(nextOp, entry.segment.startOp, run);
      await this.runSession(i, run, {});
      nextOp = entry.segment.endOp;
    }
    await this.runHostOps(nextOp, this.headStart, run);
    // The head (final norm, LM head) runs over the rows that need logits, a bounded number at a
    // time: the sampled sequences' last rows, then the prompt rows whose log-probs are asked.
    const output = emptySampleOutput(batch.sampling);
    const samples = this.options.collectives === undefined || this.options.collectives.rank === 0;
    const greedyOnly = !needsLogits(batch);
    for (const seqs of chunksOf(sampledSeqs(batch.sampling, numSeqs), this.logitsChunkRows)) {
      const head = await this.runHead(run, seqs.map((s) => batch.queryStart[s + 1]! - 1), greedyOnly);
      if (!samples) continue;
      if ('greedy' in head) seqs.forEach((s, j) => (output.tokens[s] = Number(head.greedy[j])));
      else {
        await batch.sampling.tokenMask?.ready;
        await sampleRowsInTurns(head.logits, c.vocabSize, batch.sampling, seqs, output);
      }
    }
    await batch.sampling.tokenMask?.ready;
    if (batch.promptLogprobs) {
      const request = batch.promptLogprobs;
      const answer = emptyPromptLogprobs(request);
      for (const rows of chunksOf(wantedPromptRows(request), this.logitsChunkRows)) {
        const head = await this.runHead(run, rows, false);
        if (!samples || !('logits' in head)) continue;
        rows.forEach((row, j) => writePromptLogprob(answer, request, row, head.logits.subarray(j * c.vocabSize, (j + 1) * c.vocabSize)));
      }
      if (samples) output.promptLogprobs = answer;
    }
    return output;
  }

  /**
   * Runs the sessions (and the host ops: a rank's collectives, host linears) from gather_last to
   * the sample op over the token rows `tokenRows`: their logits, or only their argmax when
   * `greedy` and the head session samples (ORT then holds the rows' logits only inside the run).
   */
  private async runHead(run: StepRun, tokenRows: Int32Array, greedy: boolean): Promise<{ logits: Float32Array } | { greedy: BigInt64Array }> {
    const { Tensor } = this.ort;
    const vocab = this.config.vocabSize;
    const rows = tokenRows.length;
    run.headRows = rows;
    run.headTokenRows = tokenRows;
    this.maxLogitsRows = Math.max(this.maxLogitsRows, rows);
    const lastIndex = new Tensor('int32', tokenRows, [rows]);
    let nextOp = this.headStart;
    let answer: { logits: Float32Array } | { greedy: BigInt64Array } | null = null;
    for (const [i, entry] of this.sessions.entries()) {
      if (entry.segment.startOp < this.headStart) continue;
      await this.runHostOps(nextOp, entry.segment.startOp, run);
      const fetches: Record<string, Ort.Tensor> = {};
      if (entry.segment.withHead && greedy) {
        const tokens = new BigInt64Array(rows);
        fetches[stepOutputs.greedy] = new Tensor('int64', tokens, [rows]);
        answer = { greedy: tokens };
      } else if (entry.segment.withHead) {
        const logits = this.buffers.f32('logits', rows * vocab);
        fetches[stepOutputs.logits] = new Tensor('float32', logits, [rows, vocab]);
        answer = { logits };
      }
      await this.runSession(i, run, { [stepInputs.lastIndex]: lastIndex }, fetches);
      nextOp = entry.segment.endOp;
    }
    // A tensor-parallel rank gathers its slice of the logits on the host, host linears make them there; the sample op is the step's.
    const sampleOp = this.graph.ops.length - 1;
    await this.runHostOps(nextOp, sampleOp, run);
    const sample = this.graph.ops[sampleOp]!;
    if (sample.op !== 'sample') throw new BackendError(this.name, 'the graph does not end with its sample op');
    return answer ?? { logits: run.carried.get(sample.logits)! };
  }

  /** Runs session `i` of the step: its carried activations in and out, its layers' new K and V written to their slots. */
  private async runSession(i: number, run: StepRun, inputs: Record<string, Ort.Tensor>, extraFetches: Record<string, Ort.Tensor> = {}): Promise<void> {
    const { segment, carriedIn, carriedOut, session } = this.sessions[i]!;
    const { Tensor } = this.ort;
    const c = this.config;
    const numTokens = run.batch.tokenIds.length;
    const kvCols = c.numKvHeads * c.headDim;
    const feeds: Record<string, Ort.Tensor> = { ...run.shared, ...inputs };
    const fetches: Record<string, Ort.Tensor> = { ...extraFetches };
    for (const name of carriedIn) feeds[stepInputs.carried(name)] = this.tensorOf(run, name, run.carried.get(name)!);
    const kNew: Float32Array[] = [];
    const vNew: Float32Array[] = [];
    for (let l = segment.firstLayer; l < segment.endLayer; l++) {
      feeds[stepInputs.kCache(l)] = this.cacheTensor(this.kCache[l]!.values);
      feeds[stepInputs.vCache(l)] = this.cacheTensor(this.vCache[l]!.values);
      if (kvHasScales(this.kvFormat)) {
        feeds[stepInputs.kScales(l)] = this.cacheTensor(this.kCache[l]!.scales!);
        feeds[stepInputs.vScales(l)] = this.cacheTensor(this.vCache[l]!.scales!);
      }
      kNew.push(this.buffers.f32(`k${l}`, numTokens * kvCols));
      vNew.push(this.buffers.f32(`v${l}`, numTokens * kvCols));
      fetches[stepOutputs.k(l)] = new Tensor('float32', kNew.at(-1)!, [numTokens, kvCols]);
      fetches[stepOutputs.v(l)] = new Tensor('float32', vNew.at(-1)!, [numTokens, kvCols]);
    }
    // An activation a session writes goes to whichever of its two buffers does not hold the
    // activation now, so no run reads what it writes (rotary rewrites q and k, for one).
    for (const name of carriedOut) {
      const length = this.rowsOf(run, name) * this.graph.activations[name]!.cols;
      const first = this.buffers.f32(`${name}0`, length);
      const out = run.carried.get(name)?.buffer === first.buffer ? this.buffers.f32(`${name}1`, length) : first;
      fetches[stepOutputs.carried(name)] = this.tensorOf(run, name, out);
      run.carried.set(name, out);
    }
    const used = Object.fromEntries(session.inputNames.map((n) => [n, feeds[n]!]));
    await session.run(used, fetches);
    for (let l = segment.firstLayer; l < segment.endLayer; l++) {
      this.writeKv(this.kCache[l]!, kNew[l - segment.firstLayer]!, run.batch.slotMapping);
      this.writeKv(this.vCache[l]!, vNew[l - segment.firstLayer]!, run.batch.slotMapping);
    }
  }

  /** Rows of an activation in this step: every token, or the head rows of the current head run. */
  private rowsOf(run: StepRun, activation: string): number {
    return this.graph.activations[activation]!.rows === 'tokens' ? run.batch.tokenIds.length : run.headRows;
  }

  private tensorOf(run: StepRun, activation: string, data: Float32Array): Ort.Tensor {
    return new this.ort.Tensor('float32', data, [this.rowsOf(run, activation), this.graph.activations[activation]!.cols]);
  }

  /**
   * The graph ops in [from, to) that run here: the embedding lookup, a rank's collectives, and
   * with --cpu-gemm native the linears, norms, residual adds and the head's row gather, over the
   * activations in `run.carried` (in place, or into a new buffer).
   */
  private async runHostOps(from: number, to: number, run: StepRun): Promise<void> {
    for (let i = from; i < to; i++) {
      const op = this.graph.ops[i]!;
      switch (op.op) {
        case 'embedding':
          run.carried.set(op.out, embedRows(this.embedding, run.batch.tokenIds, this.buffers.f32('embedded', this.rowsOf(run, op.out) * this.graph.activations[op.out]!.cols)));
          break;
        case 'all_reduce':
          this.rankCollectives().allReduce(run.carried.get(op.x)!);
          break;
        case 'all_gather': {
          const out = this.buffers.f32(op.out, this.rowsOf(run, op.out) * this.graph.activations[op.out]!.cols);
          this.rankCollectives().allGather(run.carried.get(op.x)!, out, this.rowsOf(run, op.x), op.parts);
          run.carried.set(op.out, out);
          break;
        }
        case 'linear': {
          if (!this.hostLinears) throw new BackendError(this.name, 'a linear op reached the host without --cpu-gemm native');
          this.hostLinears.run(i, this.rowsOf(run, op.x), this.linearActivations(run));
          i += this.hostLinears.groupLength(i) - 1;
          break;
        }
        default:
          if (this.hostOps?.run(op, this.hostStep(run))) break;
          throw new BackendError(this.name, `the ${op.op} op has no host implementation`);
      }
    }
  }

  /** What the host ops read of a step: made once a step, it reads the current head rows from `run`. */
  private hostStep(run: StepRun): HostStep {
    const c = this.config;
    const { queryStart, kvLens, pageTable, pageTableStart, slotMapping } = run.batch;
    return (run.host ??= {
      activations: this.linearActivations(run),
      rowsOf: (name) => this.rowsOf(run, name),
      colsOf: (name) => this.graph.activations[name]!.cols,
      get headRows() {
        return run.headTokenRows;
      },
      cos: run.cos,
      sin: run.sin,
      attention: { numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, pageSize: this.pageSize, numSlots: this.numSlots, queryStart, kvLens, pageTable, pageTableStart, slotMapping },
      cache: (layer) => ({ k: this.kCache[layer]!.values as Float32Array, v: this.vCache[layer]!.values as Float32Array }),
    });
  }

  private linearActivations(run: StepRun): LinearActivations {
    return {
      get: (name) => run.carried.get(name)!,
      output: (name, length) => {
        const out = this.buffers.f32(`host.${name}`, length);
        run.carried.set(name, out);
        return out;
      },
      scratch: (key, length) => this.buffers.f32(key, length),
    };
  }

  /** A step's new K or V rows into a layer's cache (a method: tests emulate a cache format through it). */
  private writeKv(cache: LayerCache, rows: Float32Array, slotMapping: Int32Array): void {
    writeKvRows(this.kvFormat, cache, rows, slotMapping, { numKvHeads: this.config.numKvHeads, headDim: this.config.headDim, numSlots: this.numSlots });
  }

  private rankCollectives(): RankCollectives {
    if (!this.options.collectives) throw new BackendError(this.name, 'a tensor-parallel graph needs the ranks of backends/tensor-parallel');
    return this.options.collectives;
  }

  async close(): Promise<void> {
    for (const { session } of this.sessions) {
      if (this.options.profilePrefix) session.endProfiling();
      await session.release();
    }
    this.sessions = [];
    this.loaded = false;
    this.kCache = [];
    this.vCache = [];
  }

  private validate(batch: ForwardBatch): void {
    if (!this.loaded) throw new BackendError(this.name, 'forward() before load()');
    if (this.numSlots === 0) throw new BackendError(this.name, 'forward() before allocateKvCache()');
    validateForwardBatch(this.name, batch, { vocabSize: this.config.vocabSize, numPages: this.numSlots / this.pageSize, pageSize: this.pageSize });
  }

  /** A cache array as a [kvHeads, slots, n] tensor (n: headDim, q4_0's bytes per head, or the blocks per head for scales). */
  private cacheTensor(cache: Float32Array | Uint8Array | Int8Array): Ort.Tensor {
    const dims = [this.config.numKvHeads, this.numSlots, cache.length / (this.config.numKvHeads * this.numSlots)];
    if (cache instanceof Float32Array) return new this.ort.Tensor('float32', cache, dims);
    return cache instanceof Int8Array ? new this.ort.Tensor('int8', cache, dims) : new this.ort.Tensor('uint8', cache, dims);
  }

}

/** Greedy steps without log-probs, penalties, logit biases or token masks can take the in-graph argmax instead of the logits. */
function needsLogits(batch: ForwardBatch): boolean {
  const s = batch.sampling;
  return s.penalties !== null || s.tokenMask != null || s.logitBias != null || s.temperature.some((t) => t > 0) || s.logprobs.some((k) => k >= 0);
}

const ggmlTypeName: Record<GgmlBlockType, string> = { q8_0: 'Q8_0', q4_0: 'Q4_0' };

/** A GGUF source whose matrices are Q8_0 or Q4_0 blocks runs at those bits unless --cpu-weights says otherwise. */
function storedFormat(model: ModelSpec): WeightFormat | undefined {
  const type = model.weights.storedType?.(`${layerPrefix(0)}.self_attn.q_proj.weight`);
  return type === 'Q8_0' ? 'q8' : type === 'Q4_0' ? 'q4' : undefined;
}
