import type { Backend, BackendOptions, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, StepOutput } from '../../src/engine/backend.js';
import { BackendError } from '../../src/errors.js';
import { shardLlama, type RankShard } from '../../src/model/shard.js';
import { ShardedWeights } from '../../src/model/sharded-weights.js';
import { CudaBackend, stepOutputOf } from '../cuda/cuda-backend.js';
import type { CudaAddon, NativeNcclGroup } from '../cuda/native.js';

/**
 * Tensor-parallel ranks on GPUs: rank r is a CudaBackend on devices[r] holding its shard of the
 * graph and weights (src/model/shard.ts; each rank reads only its slices) and its own KV cache
 * shard. The ranks' all_reduce and all_gather ops are NCCL calls on each rank's compute stream,
 * inside its captured CUDA graphs; the addon's NcclGroup steps every rank at once, one thread
 * per rank, and returns rank 0's sampled tokens.
 */
export class CudaRanksBackend implements Backend {
  readonly name = 'cuda' as const;
  /** Each rank's lm-head is a slice of the vocabulary; headLogits would see only rank 0's part. */
  readonly supportsPromptLogprobs = false;
  private ranks: CudaBackend[] = [];
  private shards: RankShard[] = [];
  private group: NativeNcclGroup | null = null;
  private kvTokens = 0;

  constructor(
    private readonly addon: CudaAddon,
    /** The GPU of each rank (gpu-ranks.ts plans them). */
    readonly devices: readonly number[],
    private readonly options: BackendOptions = {},
  ) {
    if (!addon.NcclGroup) throw new BackendError('cuda', 'the CUDA addon predates tensor-parallel ranks (no NcclGroup); rebuild it: node scripts/build-native.mjs');
  }

  get tpSize(): number {
    return this.devices.length;
  }

  get description(): string {
    const parts = [`cuda x ${this.tpSize} tensor-parallel ranks on GPUs ${this.devices.join(', ')} (one thread per rank, NCCL collectives on each rank's stream)`];
    if (this.group) parts.push(this.group.description());
    const rank = this.shards[0]?.config;
    if (rank) parts.push(`per rank: ${rank.numHeads} attention heads, ${rank.numKvHeads} KV heads, intermediate ${rank.intermediateSize}${this.kvTokens ? `, KV cache ${this.kvTokens} tokens` : ''}`);
    if (this.ranks[0]) parts.push(`rank 0: ${this.ranks[0].description}`);
    return parts.join('; ');
  }

  async load(model: ModelSpec): Promise<void> {
    this.shards = shardLlama(model.config, this.tpSize);
    this.group = new this.addon.NcclGroup!(Int32Array.from(this.devices));
    // One rank at a time, each reading only its own slices of the checkpoint.
    for (const shard of this.shards) {
      const rank = new CudaBackend(this.addon, { ...this.options, device: this.devices[shard.rank]! });
      this.ranks.push(rank);
      this.group.attach(rank.native, shard.rank);
      await rank.load({ config: shard.config, graph: shard.graph, weights: new ShardedWeights(model.weights, shard.slices, shard.rank) });
    }
  }

  /** Every rank holds the same tokens' KV for its heads: the pool is what the tightest GPU holds. */
  kvCapacity(budget: KvBudget): number {
    if (this.ranks.length === 0) throw new BackendError(this.name, 'load() a model first');
    return Math.min(...this.ranks.map((rank) => rank.kvCapacity(budget)));
  }

  async allocateKvCache(spec: KvCacheSpec): Promise<void> {
    for (const rank of this.ranks) await rank.allocateKvCache(spec);
    this.kvTokens = spec.numPages * spec.pageSize;
  }

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    if (!this.group || this.ranks.length === 0) throw new BackendError(this.name, 'load() a model first');
    if (batch.promptLogprobs) throw new BackendError(this.name, 'prompt log-probs are not available on tensor-parallel cuda ranks');
    return stepOutputOf(await this.group.forward(await this.ranks[0]!.prepareStep(batch)));
  }

  async close(): Promise<void> {
    for (const rank of this.ranks) await rank.close();
    this.group?.close();
    this.ranks = [];
    this.group = null;
  }
}
