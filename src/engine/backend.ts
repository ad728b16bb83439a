import type { LlamaConfig } from '../model/config.js';
import type { LlamaGraph } from '../model/graph.js';
import type { WeightSource } from '../model/weights.js';

/** What a backend loads: the shapes, the graph to compile once, and a source of tensors. */
export interface ModelSpec {
  config: LlamaConfig;
  graph: LlamaGraph;
  weights: WeightSource;
}

/** Every backend setting; each backend reads those it has and ignores the rest. */
export interface BackendOptions {
  /** cuda: capture and replay decode steps as CUDA graphs (default true). */
  graphCapture?: boolean;
  /** cpu: intra-op threads (default: all cores). */
  threads?: number;
  /** cuda: the device index (default 0). */
  device?: number;
  /** cpu: f32, q8 (GGUF Q8_0 blocks) or q4 (GGUF Q4_0 blocks); default f32 for f32 checkpoints, q8 for BF16/F16 ones. */
  cpuWeights?: CpuWeightFormat;
  /** cpu: the KV cache's element type; `auto` (default) is f32, fp8_e4m3 / fp8_e5m2 one byte per value, q8_0 int8 blocks of 32 with a scale, q4_0 4-bit blocks of 32 with a scale. */
  kvCacheDtype?: KvCacheDtype;
  /** cpu: where linear layers run: `ort` (default) onnxruntime's MatMulNBits inside the sessions, `native` the native/cpu addon's Q8_0 / Q4_0 tile kernels on the host (q8 or q4 weights, not f32). */
  cpuGemm?: CpuGemmKernel;
  /** webgpu: KV positions per attention split before decode attention is split over the KV length (default 256). */
  webgpuAttentionSplit?: number;
}

/**
 * The two collectives of a tensor-parallel rank's graph (src/model/shard.ts's all_reduce and
 * all_gather ops), handed to a rank backend by backends/tensor-parallel; a backend without them
 * runs only unsharded graphs.
 */
export interface RankCollectives {
  readonly rank: number;
  readonly tpSize: number;
  /** x = the sum of x over the ranks. */
  allReduce(x: Float32Array): void;
  /** out row r = x row r of rank 0, then of rank 1, ...; parts[i] is rank i's column count. */
  allGather(x: Float32Array, out: Float32Array, rows: number, parts: readonly number[]): void;
}

export const cpuWeightFormats = ['f32', 'q8', 'q4'] as const;
export type CpuWeightFormat = (typeof cpuWeightFormats)[number];

/** --cpu-gemm values: the kernel of the cpu backend's linear layers (see backends/cpu/host-linears.ts). */
export const cpuGemmKernels = ['auto', 'ort', 'native'] as const;
export type CpuGemmKernel = (typeof cpuGemmKernels)[number];

/** --kv-cache-dtype values: vLLM's and SGLang's (their `fp8` means fp8_e4m3), and llama.cpp's q8_0 and q4_0 (its --cache-type-k/-v). */
export const kvCacheDtypes = ['auto', 'fp8', 'fp8_e4m3', 'fp8_e5m2', 'q8_0', 'q4_0'] as const;
export type KvCacheDtype = (typeof kvCacheDtypes)[number];

/** What a backend folder exports, and the registry (backends/index.ts) lists. */
export interface BackendDescriptor<Name extends string = string> {
  readonly name: Name;
  /** One line for --help: what runs where. */
  readonly summary: string;
  /** A backend ready to load(); BackendUnavailableError when it cannot run on this machine. */
  create(options: BackendOptions): Promise<Backend>;
}

/** The memory the user gave the KV cache. */
export interface KvBudget {
  /** Fraction of device memory for weights and KV together (device backends). */
  memFractionStatic: number;
  /** The pool size in tokens when the user gave one; null: the backend's default for its memory. */
  maxTotalTokens: number | null;
  /** The smallest pool worth having (one page); a budget that leaves less is an error. */
  minTokens: number;
}

/** The KV cache: `numPages` pages of `pageSize` token slots, per layer, for K and V. */
export interface KvCacheSpec {
  numPages: number;
  pageSize: number;
}

/**
 * Per-sequence sampling settings for one step, all arrays of length S. The engine draws
 * `random` from each request's own generator, so seeded sampling does not depend on the batch.
 * The rule every backend implements is backends/shared/host-sampler.ts.
 */
export interface SamplingBatch {
  /** 0 means greedy (argmax, lowest id on ties). */
  temperature: Float32Array;
  /** 1 means off. */
  topP: Float32Array;
  /** 0 (or >= vocab) means off. */
  topK: Int32Array;
  /** 0 means off. */
  minP: Float32Array;
  /** Uniform in [0, 1): the draw for inverse-CDF sampling. */
  random: Float32Array;
  /** -1: no log-probs; 0: the sampled token's; k > 0: also the top k. */
  logprobs: Int32Array;
  penalties: PenaltyBatch | null;
  /** Allowed-token masks of the constrained rows (structured output); absent or null: no row is constrained. */
  tokenMask?: TokenMaskBatch | null;
  /** Sparse per-row logit additions (logit_bias, and min_tokens' banned stop ids); absent or null: no row has any. */
  logitBias?: LogitBiasBatch | null;
  /**
   * [S]: 1 where row s's token is used (a decode, or the chunk that ends a prompt); 0 for a
   * prefill chunk that does not end its prompt, whose logits a backend need not compute (its
   * output row is then meaningless). Absent: every row samples.
   */
  sampled?: Uint8Array;
}

/**
 * Per-row sparse additions to the logits, applied first (before penalties, as vLLM applies
 * logit_bias and min_tokens ahead of its penalties): logits[id] += bias. A bias of -Infinity
 * bans the token (min_tokens: the stop ids until that many tokens were generated). Row s owns
 * entries [rowStart[s], rowStart[s+1]); an id appears at most once per row.
 */
export interface LogitBiasBatch {
  rowStart: Int32Array; // [S + 1]
  tokenIds: Int32Array;
  bias: Float32Array;
}

/**
 * Per-row allowed-token bitmasks, applied after penalties and before everything else the
 * sampler does (greedy choice, top-k/top-p/min-p, log-probs): a disallowed token's logit is -inf.
 */
export interface TokenMaskBatch {
  /** [S]: the row of sequence s in `bits`, or -1 when s is unconstrained. */
  rowOf: Int32Array;
  /** 32-bit words per row: ceil(vocab / 32). */
  words: number;
  /** Token t is allowed in row r when bit (t % 32) of bits[r * words + (t >> 5)] is set. */
  bits: Int32Array;
  /**
   * Resolves once `bits` is filled (never rejects). The engine's mask worker computes the masks
   * while the backend runs the model, so a backend reads this only when it is about to sample
   * and waits then: the engine counts the time from that read as mask work the step did not
   * hide. A backend that must have the masks before it starts (cuda with
   * SLUICE_CUDA_MASK_OVERLAP=0 or an addon built before launchForward) reads it first.
   */
  readonly ready: Promise<void>;
}

/**
 * Repetition, frequency and presence penalties. For sequence s, the distinct tokens it has seen
 * are tokenIds[tokenStart[s] .. tokenStart[s+1]); outputCounts says how often each occurred in
 * the generated output (0 when only in the prompt). Repetition applies to every listed token,
 * frequency and presence only to those with outputCounts > 0.
 */
export interface PenaltyBatch {
  repetition: Float32Array;
  frequency: Float32Array;
  presence: Float32Array;
  tokenStart: Int32Array;
  tokenIds: Int32Array;
  outputCounts: Int32Array;
}

/**
 * One forward step over S sequences and T tokens: prefill chunks and decode tokens mixed.
 * Sequence s owns tokens [queryStart[s], queryStart[s+1]) of the flat arrays; its KV after this
 * step has kvLens[s] positions, the new tokens being the last ones. The KV slot of position p
 * of sequence s is pageTable[pageTableStart[s] + floor(p / pageSize)] * pageSize + p % pageSize.
 */
export interface ForwardBatch {
  tokenIds: Int32Array; // [T]
  positions: Int32Array; // [T]
  queryStart: Int32Array; // [S + 1]
  kvLens: Int32Array; // [S]
  pageTable: Int32Array;
  pageTableStart: Int32Array; // [S + 1]
  /** The slot each new token's K and V are written to (derivable from the page table; precomputed). */
  slotMapping: Int32Array; // [T]
  sampling: SamplingBatch;
  /**
   * Overlap (SGLang's overlap scheduler): step N+1 launched before step N's tokens reached the
   * host. Where set, row t's input token is not tokenIds[t] (which holds -1) but the token that
   * sequence previousRow[t] of the PREVIOUS forward() sampled, read from device memory; -1 rows
   * take tokenIds[t]. Only sent to a backend whose `overlapsSteps` is true, and only while that
   * previous step is the last one launched (src/engine/engine.ts, runLoop).
   */
  previousRow?: Int32Array; // [T]
  /**
   * Optional (backends with supportsPromptLogprobs): log-probs at prompt positions, for prompt
   * log-probs and echo. Absent or null: only the sampled rows' log-probs.
   */
  promptLogprobs?: PromptLogprobsRequest | null;
}

/** Which token rows of a step want the log-prob of a given next token (and the top alternatives there). */
export interface PromptLogprobsRequest {
  /** Per token row: the token id whose log-prob under this row's logits is wanted; -1 for none. */
  targets: Int32Array; // [T]
  /** Top alternatives per wanted row (the largest asked in the batch); 0 for none. */
  topK: number;
}

/** The answer to PromptLogprobsRequest, by token row; rows not asked hold NaN / -1. */
export interface PromptLogprobsOutput {
  logprobs: Float32Array; // [T]
  /** 1 + how many tokens had a higher logit than the target. */
  ranks: Int32Array; // [T]
  k: number;
  topIds: Int32Array; // [T * k]
  topLogprobs: Float32Array; // [T * k]
}

export interface TopLogprobs {
  /** k per sequence row (the largest k asked in the batch). */
  k: number;
  ids: Int32Array; // [S * k]
  logprobs: Float32Array; // [S * k]
}

export interface StepOutput {
  /** Next token of each sequence (meaningless for a prefill chunk that is not the prompt's last). */
  tokens: Int32Array; // [S]
  /** Log-prob of each sampled token under the model's distribution (after penalties, before temperature); null when no sequence asked. */
  logprobs: Float32Array | null;
  topLogprobs: TopLogprobs | null;
  /** Present when the batch asked promptLogprobs. */
  promptLogprobs?: PromptLogprobsOutput | null;
}

export interface Backend {
  /** The registry's name for real backends (ref, cpu, ...); test backends have their own. */
  readonly name: string;
  /** Computes ForwardBatch.promptLogprobs (prompt log-probs, echo with log-probs); absent: it cannot. */
  readonly supportsPromptLogprobs?: boolean;
  /** One line for logs: the device and what drives it. */
  readonly description: string;
  /** Compiles the graph and loads the weights, one tensor at a time. */
  load(model: ModelSpec): Promise<void>;
  /** After load(): how many KV tokens fit under the budget (src/engine/kv-capacity.ts has the shared rules). */
  kvCapacity(budget: KvBudget): number;
  allocateKvCache(spec: KvCacheSpec): Promise<void>;
  /** Runs one step asynchronously (the Node event loop stays free while it computes). */
  forward(batch: ForwardBatch): Promise<StepOutput>;
  /**
   * True when forward() may be called again before the previous call resolved, with
   * ForwardBatch.previousRow naming input tokens still on the device (queued on the same stream,
   * so step N+1 starts the moment step N ends). Steps must run in the order they were launched:
   * the engine may free a sequence's KV pages (an abort, a stop found in step N's output) while
   * a step that writes them is still queued, and hand them to a later step. A batch's arrays
   * stay as they are until its forward() resolved (the engine builds into two sets of buffers
   * in turn). Absent: one step at a time, ids from the host.
   */
  readonly overlapsSteps?: boolean;
  close(): Promise<void>;
}
