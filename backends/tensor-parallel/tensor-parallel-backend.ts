import { Worker } from 'node:worker_threads';
import type { Backend, BackendOptions, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, StepOutput } from '../../src/engine/backend.js';
import { hostKvCapacity, kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import { BackendError } from '../../src/errors.js';
import { shardLlama, type RankShard } from '../../src/model/shard.js';
import { ShardedWeights } from '../../src/model/sharded-weights.js';
import { controlWords } from './collectives.js';
import type { FromRank, RankBackendName, RankInit, ToRank } from './protocol.js';
import { logitsRowsPerChunk } from '../shared/logits-rows.js';

/** A rank's thread and the replies it owes, in the order the messages went. */
class RankThread {
  private readonly pending: { resolve: (m: FromRank) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | null = null;

  constructor(readonly worker: Worker) {
    worker.on('message', (m: FromRank) => this.pending.shift()?.resolve(m));
    const fail = (e: Error) => {
      this.failure = e;
      for (const p of this.pending.splice(0)) p.reject(e);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`rank thread exited (code ${code})`)));
  }

  async call(message: ToRank, transfer: ArrayBuffer[] = []): Promise<FromRank> {
    if (this.failure) throw this.failure;
    const reply = new Promise<FromRank>((resolve, reject) => this.pending.push({ resolve, reject }));
    this.worker.postMessage(message, transfer);
    return reply;
  }
}

/**
 * N tensor-parallel ranks that look like one backend to the engine: the engine schedules once,
 * and each step runs on every rank in lockstep, each rank a backend over its shard of the graph
 * and weights (src/model/shard.ts) with its own KV cache shard, in its own worker thread;
 * collectives go over shared memory (collectives.ts). Rank 0's sampled tokens are the step's.
 * `ref` and `cpu` ranks exist to test the sharding, not for speed.
 */
export class TensorParallelBackend implements Backend {
  readonly name: string;
  private rankDescription: string | null = null;
  private kvTokens = 0;
  /** The unsharded model's head counts, for the description. */
  private model: { numHeads: number; numKvHeads: number } | null = null;
  private ranks: RankThread[] = [];
  private shards: RankShard[] = [];
  private readonly control = new SharedArrayBuffer(controlWords * 4);
  private data = new SharedArrayBuffer(0);

  constructor(
    private readonly rankBackend: RankBackendName,
    readonly tpSize: number,
    private readonly rankOptions: BackendOptions = {},
  ) {
    this.name = rankBackend;
  }

  get description(): string {
    const parts = [`${this.rankBackend} x ${this.tpSize} tensor-parallel ranks (worker threads, collectives over shared memory)`];
    if (this.model && this.shards.length > 0) parts.push(`per rank: ${this.perRankLayout()}`);
    if (this.rankDescription) parts.push(`rank 0: ${this.rankDescription}`);
    return parts.join('; ');
  }

  /** Each rank's heads and KV cache (once allocated): what --tp-size divides and what it replicates. */
  private perRankLayout(): string {
    const rank = this.shards[0]!.config;
    const { numHeads, numKvHeads } = this.model!;
    const replicated = rank.numKvHeads * this.tpSize > numKvHeads ? `, each KV head replicated on ${(rank.numKvHeads * this.tpSize) / numKvHeads} ranks` : '';
    const heads = `${rank.numHeads} of ${numHeads} attention heads, ${rank.numKvHeads} of ${numKvHeads} KV heads${replicated}`;
    if (this.kvTokens === 0) return heads;
    const perToken = kvBytesPerToken(rank, 4);
    return `${heads}, KV cache ${this.kvTokens} tokens x ${formatBytes(perToken)} = ${formatBytes(perToken * this.kvTokens)}`;
  }

  async load(model: ModelSpec): Promise<void> {
    this.shards = shardLlama(model.config, this.tpSize);
    this.model = { numHeads: model.config.numHeads, numKvHeads: model.config.numKvHeads };
    this.ranks = this.shards.map(
      (shard) =>
        new RankThread(
          new Worker(new URL('./rank-worker-entry.mjs', import.meta.url), {
            workerData: { rank: shard.rank, tpSize: this.tpSize, backend: this.rankBackend, options: this.rankOptions, control: this.control } satisfies RankInit,
          }),
        ),
    );
    // One rank's slices at a time, one tensor at a time: no rank's thread and no step here holds more.
    for (const shard of this.shards) {
      const weights = new ShardedWeights(model.weights, shard.slices, shard.rank);
      const rank = this.ranks[shard.rank]!;
      for (const name of graphWeights(shard)) {
        const bytes = await weights.read(name);
        check(await rank.call({ type: 'tensor', info: weights.info(name)!, bytes }, [bytes.buffer as ArrayBuffer]));
      }
      const loaded = check(await rank.call({ type: 'load', config: shard.config, graph: shard.graph, random: model.weights.random }));
      if (shard.rank === 0 && loaded.type === 'done') this.rankDescription = loaded.description ?? null;
    }
  }

  /** Every rank's KV shard lives in this process's memory: the host budget holds all of them (replicated KV heads included). */
  kvCapacity(budget: KvBudget): number {
    const perRank = kvBytesPerToken(this.shards[0]!.config, 4);
    return hostKvCapacity(perRank * this.tpSize, budget);
  }

  async allocateKvCache(spec: KvCacheSpec): Promise<void> {
    await this.all({ type: 'allocate', spec });
    this.kvTokens = spec.numPages * spec.pageSize;
  }

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    const config = this.shards[0]!.config;
    // Per rank: the activations of every token, or its slice of the logits of one LM-head run
    // (ranks run their head over a bounded number of rows at a time, shared/logits-rows.ts).
    const hidden = batch.tokenIds.length * config.hiddenSize;
    const logits = Math.min(batch.kvLens.length, logitsRowsPerChunk(config.vocabSize)) * Math.ceil(config.vocabSize / this.tpSize);
    const bytes = Math.max(hidden, logits) * 4 * this.tpSize;
    if (this.data.byteLength < bytes) this.data = new SharedArrayBuffer(bytes);
    const replies = await this.all({ type: 'forward', batch, data: this.data });
    const output = (replies[0] as { output?: StepOutput | null }).output;
    if (!output) throw new BackendError(this.name, 'rank 0 returned no step output');
    return output;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.ranks.map((r) => r.call({ type: 'close' })));
    await Promise.all(this.ranks.map((r) => r.worker.terminate()));
    this.ranks = [];
  }

  /** Sends a message to every rank; the first rank error stops them all (the others may wait at a barrier forever). */
  private async all(message: ToRank): Promise<FromRank[]> {
    try {
      return (await Promise.all(this.ranks.map((r) => r.call(message)))).map(check);
    } catch (e) {
      const failed = this.ranks.map((r) => r.worker);
      this.ranks = [];
      await Promise.all(failed.map((w) => w.terminate()));
      throw e instanceof BackendError ? e : new BackendError(this.name, (e as Error).message);
    }
  }
}

function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

function check(reply: FromRank): FromRank {
  if (reply.type === 'error') throw new BackendError('tensor-parallel rank', reply.message);
  return reply;
}

function graphWeights(shard: RankShard): string[] {
  const names = new Set<string>();
  for (const op of shard.graph.ops) {
    if ('weight' in op) names.add(op.weight);
    if ('table' in op) names.add(op.table);
  }
  return [...names];
}
