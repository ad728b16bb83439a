import type { PromptLogprobsOutput, PromptLogprobsRequest } from '../../src/engine/backend.js';
import { logSumExp, topK } from './host-sampler.js';

/**
 * Answers ForwardBatch.promptLogprobs on the host, one wanted row at a time: `logitsOf(row)` gives
 * that token row's logits (final norm and LM head applied), from which the target's log-prob, its
 * rank and the top alternatives are read. Only the rows asked for are ever turned into logits.
 */
export function hostPromptLogprobs(request: PromptLogprobsRequest, logitsOf: (row: number) => Float32Array): PromptLogprobsOutput {
  const rows = request.targets.length;
  const k = request.topK;
  const out: PromptLogprobsOutput = {
    logprobs: new Float32Array(rows).fill(NaN),
    ranks: new Int32Array(rows),
    k,
    topIds: new Int32Array(rows * k).fill(-1),
    topLogprobs: new Float32Array(rows * k).fill(NaN),
  };
  for (let r = 0; r < rows; r++) {
    const target = request.targets[r]!;
    if (target < 0) continue;
    const logits = logitsOf(r);
    const lse = logSumExp(logits);
    const value = logits[target]!;
    out.logprobs[r] = value - lse;
    let higher = 0;
    for (let i = 0; i < logits.length; i++) if (logits[i]! > value) higher++;
    out.ranks[r] = higher + 1;
    if (k > 0) {
      const best = topK(logits, k);
      for (let i = 0; i < k; i++) {
        out.topIds[r * k + i] = best.ids[i]!;
        out.topLogprobs[r * k + i] = best.values[i]! - lse;
      }
    }
  }
  return out;
}
