import type { PromptLogprobsOutput, PromptLogprobsRequest } from '../../src/engine/backend.js';
import { logSumExp, topK } from './host-sampler.js';

/**
 * Answers ForwardBatch.promptLogprobs on the host, one wanted row at a time: `logitsOf(row)` gives
 * that token row's logits (final norm and LM head applied), from which the target's log-prob, its
 * rank and the top alternatives are read. Only the rows asked for are ever turned into logits.
 */
export function hostPromptLogprobs(request: PromptLogprobsRequest, logitsOf: (row: number) => Float32Array): PromptLogprobsOutput {
  const out = emptyPromptLogprobs(request);
  request.targets.forEach((target, row) => {
    if (target >= 0) writePromptLogprob(out, request, row, logitsOf(row));
  });
  return out;
}

/** The token rows whose log-probs the request asks for, in order. */
export function wantedPromptRows(request: PromptLogprobsRequest | null | undefined): Int32Array {
  if (!request) return new Int32Array(0);
  const rows: number[] = [];
  request.targets.forEach((target, row) => {
    if (target >= 0) rows.push(row);
  });
  return Int32Array.from(rows);
}

/** An answer with no row filled yet (NaN log-probs, rank 0, top ids -1). */
export function emptyPromptLogprobs(request: PromptLogprobsRequest): PromptLogprobsOutput {
  const rows = request.targets.length;
  const k = request.topK;
  return {
    logprobs: new Float32Array(rows).fill(NaN),
    ranks: new Int32Array(rows),
    k,
    topIds: new Int32Array(rows * k).fill(-1),
    topLogprobs: new Float32Array(rows * k).fill(NaN),
  };
}

/** Fills row `row` of `out` from that row's logits: the target's log-prob, its rank and the top alternatives. */
export function writePromptLogprob(out: PromptLogprobsOutput, request: PromptLogprobsRequest, row: number, logits: Float32Array): void {
  const target = request.targets[row]!;
  const k = out.k;
  const lse = logSumExp(logits);
  const value = logits[target]!;
  out.logprobs[row] = value - lse;
  let higher = 0;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > value) higher++;
  out.ranks[row] = higher + 1;
  if (k > 0) {
    const best = topK(logits, k);
    for (let i = 0; i < k; i++) {
      out.topIds[row * k + i] = best.ids[i]!;
      out.topLogprobs[row * k + i] = best.values[i]! - lse;
    }
  }
}
