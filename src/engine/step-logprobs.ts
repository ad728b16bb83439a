import type { PromptLogprobsOutput, StepOutput } from './backend.js';
import type { Sequence } from './sequence.js';
import type { TokenLogprob } from './types.js';

/** The sampled token's log-prob entry for row `s` of a step, with up to `want` alternatives; null when not asked for. */
export function tokenLogprob(output: StepOutput, s: number, want: number | null): TokenLogprob | null {
  if (want === null) return null;
  const top: TokenLogprob['top'] = [];
  const table = output.topLogprobs;
  if (table) {
    for (let i = 0; i < Math.min(want, table.k); i++) {
      top.push({ tokenId: table.ids[s * table.k + i]!, logprob: table.logprobs[s * table.k + i]! });
    }
  }
  return { tokenId: output.tokens[s]!, logprob: output.logprobs?.[s] ?? NaN, top };
}

/** Stores the prompt log-probs a step computed for `seq`'s rows from position `start` (position p's row gives token p + 1's). */
export function collectPromptLogprobs(seq: Sequence, numTokens: number, start: number, firstRow: number, out: PromptLogprobsOutput): void {
  const entries = seq.promptLogprobs!;
  for (let i = 0; i < numTokens; i++) {
    const target = seq.promptLogprobTarget(start + i);
    if (target < 0) continue;
    const r = firstRow + i;
    const top: TokenLogprob['top'] = [];
    for (let j = 0; j < Math.min(out.k, seq.request.params.promptLogprobs!); j++) top.push({ tokenId: out.topIds[r * out.k + j]!, logprob: out.topLogprobs[r * out.k + j]! });
    entries[start + i + 1] = { tokenId: target, logprob: out.logprobs[r]!, rank: out.ranks[r]!, top };
  }
}
