import type { Backend, ForwardBatch, KvBudget, KvCacheSpec, ModelSpec, StepOutput } from '../../src/engine/backend.js';
import { hostKvCapacity, kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import type { LlamaConfig } from '../../src/model/config.js';

// Ordinary byte-level BPE tokens of the Llama 3 vocabulary (no special ids, no stop tokens).
const firstTextToken = 1000;
const textTokenRange = 50000;

/**
 * A backend whose forward step returns at once, computing nothing: it "samples" a token that
 * is a pure function of each sequence's last input token and position. It takes the model's
 * compute out of the picture so `npm run bench:engine` measures the engine's own host time.
 */
export class InstantBackend implements Backend {
  readonly name: string = 'instant';
  readonly description: string = 'instant: returns each step at once without computing (engine host-overhead benchmark)';
  /** Off unless asked: takes in-flight input tokens (ForwardBatch.previousRow) from its last step's output. */
  readonly overlapsSteps: boolean;
  private config!: LlamaConfig;
  /** The tokens the last forward() sampled: the "device memory" previousRow points into. */
  private lastTokens = new Int32Array(0);

  constructor(options: { overlapsSteps?: boolean } = {}) {
    this.overlapsSteps = options.overlapsSteps ?? false;
  }

  async load(model: ModelSpec): Promise<void> {
    this.config = model.config;
  }

  /** Sized as a host backend with BF16 KV would be: it stores nothing. */
  kvCapacity(budget: KvBudget): number {
    return hostKvCapacity(kvBytesPerToken(this.config, 2), budget);
  }

  async allocateKvCache(_spec: KvCacheSpec): Promise<void> {}

  async forward(batch: ForwardBatch): Promise<StepOutput> {
    const numSeqs = batch.kvLens.length;
    const tokens = new Int32Array(numSeqs);
    let maxK = -1;
    for (let s = 0; s < numSeqs; s++) {
      const last = batch.queryStart[s + 1]! - 1;
      tokens[s] = firstTextToken + ((inputToken(batch, last, this.lastTokens) * 7919 + batch.positions[last]! * 104729) >>> 0) % textTokenRange;
      maxK = Math.max(maxK, batch.sampling.logprobs[s]!);
    }
    this.lastTokens = tokens;
    if (maxK < 0) return { tokens, logprobs: null, topLogprobs: null };
    const logprobs = new Float32Array(numSeqs).fill(-1);
    if (maxK === 0) return { tokens, logprobs, topLogprobs: null };
    const ids = new Int32Array(numSeqs * maxK);
    for (let s = 0; s < numSeqs; s++) for (let i = 0; i < maxK; i++) ids[s * maxK + i] = i === 0 ? tokens[s]! : firstTextToken + i;
    return { tokens, logprobs, topLogprobs: { k: maxK, ids, logprobs: new Float32Array(numSeqs * maxK).fill(-1) } };
  }

  async close(): Promise<void> {}
}

/** Row t's input token: from the host, or (overlap) what the previous step sampled for row previousRow[t]. */
export function inputToken(batch: ForwardBatch, t: number, previousTokens: Int32Array): number {
  const row = batch.previousRow?.[t] ?? -1;
  if (row < 0) return batch.tokenIds[t]!;
  if (row >= previousTokens.length) throw new Error(`previousRow ${row} is not a row of the previous step (${previousTokens.length} rows)`);
  return previousTokens[row]!;
}
