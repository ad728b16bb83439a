import type { ForwardBatch, LogitBiasBatch, PenaltyBatch, PromptLogprobsRequest, SamplingBatch } from './backend.js';
import type { StepPlan } from './scheduler.js';
import type { Sequence } from './sequence.js';

/**
 * True when this step computes the sequence's last pending token, so its output is a sampled
 * token (asked before the step is launched).
 */
export function producesToken(seq: Sequence, numTokens: number): boolean {
  return seq.kvLen + numTokens === seq.tokenIds.length + seq.tokensInFlight;
}

/**
 * Lays a step's plan out as the backend's flat arrays: tokens and positions, the page table,
 * the KV slot of every new token, and the sampling settings (one random draw per sampled token).
 * A token still in flight (sampled by the launched step `previousStep`, not yet on the host) is
 * -1 in tokenIds with its row in that step in `previousRow`.
 * The integer arrays are views of buffers reused every other step (at most two steps are out at
 * once: the one running and the one built while it runs), which keeps the garbage collector out
 * of the decode loop.
 */
export class BatchBuilder {
  private readonly ints = [new Int32Array(0), new Int32Array(0)];
  private readonly floats = [new Float32Array(0), new Float32Array(0)];
  private turn = 0;

  constructor(private readonly pageSize: number) {}

  build(plan: StepPlan, previousStep = -1): ForwardBatch {
    this.turn ^= 1;
    const pageSize = this.pageSize;
    const { sequences, numTokens } = plan;
    const numSeqs = sequences.length;
    let totalTokens = 0;
    let totalPages = 0;
    for (let s = 0; s < numSeqs; s++) {
      totalTokens += numTokens[s]!;
      totalPages += Math.ceil((sequences[s]!.kvLen + numTokens[s]!) / pageSize);
    }
    const take = this.intAllocator(4 * totalTokens + 5 * numSeqs + 2 + totalPages);
    const tokenIds = take(totalTokens);
    const positions = take(totalTokens);
    const slotMapping = take(totalTokens);
    const queryStart = take(numSeqs + 1);
    const kvLens = take(numSeqs);
    const pageTable = take(totalPages);
    const pageTableStart = take(numSeqs + 1);
    queryStart[0] = 0;
    pageTableStart[0] = 0;
    let previousRow: Int32Array | undefined;
    let t = 0;
    let pageOffset = 0;
    for (let s = 0; s < numSeqs; s++) {
      const seq = sequences[s]!;
      const start = seq.kvLen;
      const end = start + numTokens[s]!;
      const pages = seq.pages;
      const known = seq.tokenIds.length;
      for (let p = start; p < end; p++, t++) {
        if (p < known) tokenIds[t] = seq.tokenIds[p]!;
        else {
          if (seq.launchedStep !== previousStep || p !== known || seq.tokensInFlight !== 1) {
            throw new Error(`engine bug: position ${p} of request ${seq.request.id} is neither on the host nor sampled by the step in flight`);
          }
          previousRow ??= take(totalTokens).fill(-1);
          tokenIds[t] = -1;
          previousRow[t] = seq.launchedRow;
        }
        positions[t] = p;
        slotMapping[t] = pages.get(Math.floor(p / pageSize)) * pageSize + (p % pageSize);
      }
      queryStart[s + 1] = t;
      kvLens[s] = end;
      const numPages = Math.ceil(end / pageSize);
      pages.copyTo(pageTable, pageOffset, numPages);
      pageOffset += numPages;
      pageTableStart[s + 1] = pageOffset;
    }
    const sampling = this.buildSampling(plan, take(numSeqs), take(numSeqs));
    const batch: ForwardBatch = { tokenIds, positions, queryStart, kvLens, pageTable, pageTableStart, slotMapping, sampling, promptLogprobs: promptLogprobsRequest(plan, totalTokens) };
    if (previousRow) batch.previousRow = previousRow;
    return batch;
  }

  private buildSampling(plan: StepPlan, topK: Int32Array, logprobs: Int32Array): SamplingBatch {
    const numSeqs = plan.sequences.length;
    if (this.floats[this.turn]!.length < 4 * numSeqs) this.floats[this.turn] = new Float32Array(8 * numSeqs);
    const floats = this.floats[this.turn]!;
    const take = (i: number) => floats.subarray(i * numSeqs, (i + 1) * numSeqs);
    const sampling: SamplingBatch = { temperature: take(0), topP: take(1), topK, minP: take(2), random: take(3), logprobs, penalties: null, sampled: new Uint8Array(numSeqs) };
    let penalized = false;
    let biased = false;
    for (let s = 0; s < numSeqs; s++) {
      const seq = plan.sequences[s]!;
      const p = seq.request.params;
      const sampled = producesToken(seq, plan.numTokens[s]!);
      sampling.sampled![s] = sampled ? 1 : 0;
      sampling.temperature[s] = p.temperature;
      sampling.topP[s] = p.topP;
      sampling.topK[s] = p.topK > 0 ? p.topK : 0;
      sampling.minP[s] = p.minP;
      sampling.random[s] = sampled ? seq.rng.next() : 0;
      sampling.logprobs[s] = sampled && p.logprobs !== null ? p.logprobs : -1;
      if (sampled && seq.penaltyCounts) penalized = true;
      if (sampled && seq.logitBias) biased = true;
    }
    if (penalized) sampling.penalties = buildPenalties(plan);
    if (biased) sampling.logitBias = buildLogitBias(plan);
    return sampling;
  }

  /** Hands out consecutive views of one reused buffer of at least `total` ints. */
  private intAllocator(total: number): (length: number) => Int32Array {
    if (this.ints[this.turn]!.length < total) this.ints[this.turn] = new Int32Array(Math.max(total, 2 * this.ints[this.turn]!.length));
    const ints = this.ints[this.turn]!;
    let offset = 0;
    return (length) => ints.subarray(offset, (offset += length));
  }
}

function buildPenalties(plan: StepPlan): PenaltyBatch {
  const numSeqs = plan.sequences.length;
  const repetition = new Float32Array(numSeqs).fill(1);
  const frequency = new Float32Array(numSeqs);
  const presence = new Float32Array(numSeqs);
  const tokenStart = new Int32Array(numSeqs + 1);
  const ids: number[] = [];
  const counts: number[] = [];
  for (let s = 0; s < numSeqs; s++) {
    const seq = plan.sequences[s]!;
    if (seq.penaltyCounts && producesToken(seq, plan.numTokens[s]!)) {
      const p = seq.request.params;
      repetition[s] = p.repetitionPenalty;
      frequency[s] = p.frequencyPenalty;
      presence[s] = p.presencePenalty;
      for (const [id, count] of seq.penaltyCounts) {
        ids.push(id);
        counts.push(count);
      }
    }
    tokenStart[s + 1] = ids.length;
  }
  return { repetition, frequency, presence, tokenStart, tokenIds: Int32Array.from(ids), outputCounts: Int32Array.from(counts) };
}

/** The sampled rows' logit_bias and min_tokens bans, side by side (built only when some row has any). */
function buildLogitBias(plan: StepPlan): LogitBiasBatch {
  const numSeqs = plan.sequences.length;
  const rows = plan.sequences.map((seq, s) => (producesToken(seq, plan.numTokens[s]!) ? seq.logitBias : null));
  const rowStart = new Int32Array(numSeqs + 1);
  for (let s = 0; s < numSeqs; s++) rowStart[s + 1] = rowStart[s]! + (rows[s]?.tokenIds.length ?? 0);
  const tokenIds = new Int32Array(rowStart[numSeqs]!);
  const bias = new Float32Array(rowStart[numSeqs]!);
  rows.forEach((row, s) => {
    if (!row) return;
    tokenIds.set(row.tokenIds, rowStart[s]!);
    bias.set(row.bias, rowStart[s]!);
  });
  return { rowStart, tokenIds, bias };
}

/** The rows whose next-token log-prob sequences asking prompt log-probs want this step; null when none do. */
function promptLogprobsRequest(plan: StepPlan, totalTokens: number): PromptLogprobsRequest | null {
  let request: PromptLogprobsRequest | null = null;
  let t = 0;
  for (let s = 0; s < plan.sequences.length; s++) {
    const seq = plan.sequences[s]!;
    const n = plan.numTokens[s]!;
    if (seq.promptLogprobs !== null) {
      for (let i = 0; i < n; i++) {
        const target = seq.promptLogprobTarget(seq.kvLen + i);
        if (target < 0) continue;
        request ??= { targets: new Int32Array(totalTokens).fill(-1), topK: 0 };
        request.targets[t + i] = target;
        request.topK = Math.max(request.topK, seq.request.params.promptLogprobs!);
      }
    }
    t += n;
  }
  return request;
}
