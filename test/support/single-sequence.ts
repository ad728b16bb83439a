import type { Backend, ForwardBatch, SamplingBatch, StepOutput } from '../../src/engine/backend.js';

/**
 * Runs one sequence through a backend with the simplest KV layout (page size 1, slot = position):
 * the direct path used by parity tests between backends and against llama.cpp.
 */
export class SingleSequence {
  private length = 0;

  constructor(
    private readonly backend: Backend,
    private readonly logprobs = -1,
  ) {}

  /** Feeds `tokenIds` (a prompt chunk or one token) and returns the backend's output for the last of them. */
  async step(tokenIds: number[], sampling: Partial<SamplingBatch> = {}): Promise<StepOutput> {
    const n = tokenIds.length;
    const kvLen = this.length + n;
    const batch: ForwardBatch = {
      tokenIds: Int32Array.from(tokenIds),
      positions: Int32Array.from({ length: n }, (_, i) => this.length + i),
      queryStart: Int32Array.of(0, n),
      kvLens: Int32Array.of(kvLen),
      pageTable: Int32Array.from({ length: kvLen }, (_, i) => i),
      pageTableStart: Int32Array.of(0, kvLen),
      slotMapping: Int32Array.from({ length: n }, (_, i) => this.length + i),
      sampling: {
        temperature: Float32Array.of(0),
        topP: Float32Array.of(1),
        topK: Int32Array.of(0),
        minP: Float32Array.of(0),
        random: Float32Array.of(0),
        logprobs: Int32Array.of(this.logprobs),
        penalties: null,
        ...sampling,
      },
    };
    this.length = kvLen;
    return this.backend.forward(batch);
  }

  /** Greedy continuation: prefill the prompt, then decode `count` tokens one step at a time. */
  async greedy(promptIds: number[], count: number): Promise<{ tokens: number[]; logprobs: number[] }> {
    const tokens: number[] = [];
    const logprobs: number[] = [];
    let out = await this.step(promptIds);
    for (let i = 0; i < count; i++) {
      tokens.push(out.tokens[0]!);
      logprobs.push(out.logprobs?.[0] ?? NaN);
      if (i + 1 < count) out = await this.step([out.tokens[0]!]);
    }
    return { tokens, logprobs };
  }
}
