import type { Backend, ForwardBatch, SamplingBatch, StepOutput } from '../../src/engine/backend.js';

/** One sequence's part of a step: `tokens` are fed at positions `cached`, `cached + 1`, ... */
export interface SequenceStep {
  tokens: ArrayLike<number>;
  /** Positions already in the KV cache. */
  cached: number;
  /** The sequence's KV pages in order; at least enough for `cached + tokens.length` positions. */
  pages: ArrayLike<number>;
}

/**
 * Lays several sequences' steps out as one ForwardBatch over a paged KV cache: prefill chunks and
 * decode tokens side by side (the multi-sequence sibling of SingleSequence, for parity tests and
 * benchmark scripts; the engine has its own buffer-reusing BatchBuilder).
 */
export function pagedBatch(steps: SequenceStep[], pageSize: number, sampling: SamplingBatch): ForwardBatch {
  const tokenIds: number[] = [];
  const positions: number[] = [];
  const slotMapping: number[] = [];
  const queryStart = [0];
  const kvLens: number[] = [];
  const pageTable: number[] = [];
  const pageTableStart = [0];
  for (const { tokens, cached, pages } of steps) {
    const kvLen = cached + tokens.length;
    if (pages.length * pageSize < kvLen) throw new Error(`pagedBatch: ${pages.length} pages of ${pageSize} cannot hold ${kvLen} positions`);
    for (let p = cached; p < kvLen; p++) {
      tokenIds.push(tokens[p - cached]!);
      positions.push(p);
      slotMapping.push(pages[Math.floor(p / pageSize)]! * pageSize + (p % pageSize));
    }
    queryStart.push(tokenIds.length);
    kvLens.push(kvLen);
    for (let i = 0; i < pages.length; i++) pageTable.push(pages[i]!);
    pageTableStart.push(pageTable.length);
  }
  return {
    tokenIds: Int32Array.from(tokenIds),
    positions: Int32Array.from(positions),
    queryStart: Int32Array.from(queryStart),
    kvLens: Int32Array.from(kvLens),
    pageTable: Int32Array.from(pageTable),
    pageTableStart: Int32Array.from(pageTableStart),
    slotMapping: Int32Array.from(slotMapping),
    sampling,
  };
}

/** Greedy sampling for `numSeqs` sequences, each asking for `logprobs` top log-probs (-1: none). */
export function greedySampling(numSeqs: number, logprobs = -1): SamplingBatch {
  return {
    temperature: new Float32Array(numSeqs),
    topP: new Float32Array(numSeqs).fill(1),
    topK: new Int32Array(numSeqs),
    minP: new Float32Array(numSeqs),
    random: new Float32Array(numSeqs),
    logprobs: new Int32Array(numSeqs).fill(logprobs),
    penalties: null,
  };
}

/**
 * Sequences stepped together through a backend's paged KV cache, each on its own pages: every
 * step() feeds each sequence its chunk (a prompt, then its last token) in one greedy forward().
 */
export class LockstepSequences {
  private readonly lengths: number[];
  private readonly pages: number[][];

  constructor(
    private readonly backend: Backend,
    count: number,
    pagesPerSequence: number,
    private readonly pageSize: number,
  ) {
    this.lengths = new Array<number>(count).fill(0);
    this.pages = Array.from({ length: count }, (_, s) => Array.from({ length: pagesPerSequence }, (_, i) => s * pagesPerSequence + i));
  }

  /** chunks[s]: the tokens sequence s takes this step. */
  step(chunks: ArrayLike<number>[]): Promise<StepOutput> {
    const steps = Array.from(chunks, (tokens, s) => ({ tokens, cached: this.lengths[s]!, pages: this.pages[s]! }));
    steps.forEach((step, s) => (this.lengths[s] = step.cached + step.tokens.length));
    return this.backend.forward(pagedBatch(steps, this.pageSize, greedySampling(steps.length)));
  }
}
