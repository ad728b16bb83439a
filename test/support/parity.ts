import type { ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { greedySampling, pagedBatch } from './paged-batch.js';
import { presets } from '../../src/model/presets.js';

/** The largest |a - b| / (atol + |b|), for "close" checks that report how far off they are. */
export function maxRelativeError(a: Float32Array, b: Float32Array, atol = 1e-3): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (atol + Math.abs(b[i]!)));
  return worst;
}

/** Every element within atol + rtol * |want|; the message names the first few that are not. */
export function expectClose(got: Float32Array, want: Float32Array, atol: number, rtol: number, what: string): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} elements, expected ${want.length}`);
  const bad: string[] = [];
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    const tol = atol + rtol * Math.abs(want[i]!);
    if (!(err <= tol)) {
      if (bad.length < 5) bad.push(`[${i}] got ${got[i]} want ${want[i]}`);
      worst = Math.max(worst, err);
    }
  }
  if (bad.length) throw new Error(`${what}: elements out of tolerance (worst error ${worst}): ${bad.join('; ')}`);
}

/**
 * Continuous batching in miniature: each step feeds some pending tokens of some sequences
 * (prefill chunks and decode tokens side by side) through a paged cache whose pages are handed
 * out in a scrambled order (page i * pageStride mod numPages; the stride must be coprime to numPages).
 */
export class MixedSchedule {
  private readonly tokens: number[][];
  private readonly fed: number[];
  private readonly pages: number[][];
  private readonly free: number[];

  constructor(
    prompts: number[][],
    private readonly pageSize: number,
    numPages: number,
    pageStride = 11,
  ) {
    this.tokens = prompts.map((p) => [...p]);
    this.fed = prompts.map(() => 0);
    this.pages = prompts.map(() => []);
    this.free = Array.from({ length: numPages }, (_, i) => (i * pageStride) % numPages);
  }

  /**
   * counts[s]: how many pending tokens of sequence s this step feeds (0: not scheduled; a sequence
   * with nothing pending is left out). Greedy sampling with `logprobs` top log-probs.
   */
  next(counts: number[], logprobs: number): { batch: ForwardBatch; seqs: number[] } {
    const seqs = counts.flatMap((n, s) => (n > 0 && this.fed[s]! < this.tokens[s]!.length ? [s] : []));
    const steps = seqs.map((s) => {
      const cached = this.fed[s]!;
      const kvLen = Math.min(cached + counts[s]!, this.tokens[s]!.length);
      while (this.pages[s]!.length * this.pageSize < kvLen) this.pages[s]!.push(this.free.shift()!);
      this.fed[s] = kvLen;
      return { tokens: this.tokens[s]!.slice(cached, kvLen), cached, pages: this.pages[s]! };
    });
    return { batch: pagedBatch(steps, this.pageSize, greedySampling(seqs.length, logprobs)), seqs };
  }

  /** Appends the sampled token of each sequence whose known tokens have all been fed. */
  advance(seqs: number[], out: StepOutput): void {
    seqs.forEach((s, i) => {
      if (this.fed[s] === this.tokens[s]!.length) this.tokens[s]!.push(out.tokens[i]!);
    });
  }
}

/**
 * MixedSchedule counts for four sequences: chunked prefills next to decodes, sequences joining
 * late and sitting a step out.
 */
export const mixedPrefillDecodeSteps: readonly number[][] = [
  [5, 3, 0, 0],
  [4, 3, 9, 0],
  [1, 3, 2, 1],
  [1, 1, 9, 6],
  [1, 1, 1, 6],
  [1, 1, 1, 1],
  [1, 0, 1, 1],
  [1, 1, 1, 1],
];

/** Odd sizes everywhere: 5 heads over 1 KV head, head dim 6, rows that are no multiple of 32, an untied lm-head. */
export const oddShapesConfig: LlamaConfig = {
  ...presets.tiny!,
  vocabSize: 301,
  hiddenSize: 30,
  intermediateSize: 70,
  numLayers: 3,
  numHeads: 5,
  numKvHeads: 1,
  headDim: 6,
  tieWordEmbeddings: false,
  ropeScaling: null,
  ropeTheta: 10000,
};
