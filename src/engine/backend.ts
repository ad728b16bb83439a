import type { LlamaConfig } from '../model/config.js';
import type { LlamaGraph } from '../model/graph.js';
import type { WeightSource } from '../model/weights.js';

export type BackendName = 'ref' | 'cpu' | 'webgpu' | 'cuda';

/** What a backend loads: the shapes, the graph to compile once, and a source of tensors. */
export interface ModelSpec {
  config: LlamaConfig;
  graph: LlamaGraph;
  weights: WeightSource;
}

export interface BackendOptions {
  /** Capture and replay decode steps (CUDA graphs); off with --disable-cuda-graph. */
  graphCapture?: boolean;
  /** CPU threads for host backends; default all cores. */
  threads?: number;
  /** Device index for GPU backends. */
  device?: number;
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
}

export interface MemoryInfo {
  totalBytes: number;
  freeBytes: number;
}

export interface Backend {
  readonly name: BackendName;
  /** One line for logs: the device and what drives it. */
  readonly description: string;
  /** Compiles the graph and loads the weights, one tensor at a time. */
  load(model: ModelSpec): Promise<void>;
  /** Device memory for --mem-fraction-static, after the weights; null for host-memory backends. */
  memory(): MemoryInfo | null;
  /** Bytes of K and V for one token across all layers, as this backend stores them. */
  kvBytesPerToken(): number;
  allocateKvCache(spec: KvCacheSpec): Promise<void>;
  /** Runs one step asynchronously (the Node event loop stays free while it computes). */
  forward(batch: ForwardBatch): Promise<StepOutput>;
  close(): Promise<void>;
}
