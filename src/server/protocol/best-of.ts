import type { GenerateDelta, SamplingParams } from '../../engine/types.js';
import { invalidParam } from '../http/errors.js';

/** best_of above n: samples generated per prompt, and how many of them the answer returns. */
export interface BestOf {
  generate: number;
  keep: number;
  /** The client asked log-probs (else they were computed only to rank the samples, and are dropped). */
  keepLogprobs: boolean;
}

/**
 * best_of as vLLM (v0) and OpenAI's completions define it: best_of samples per prompt, the n with
 * the highest cumulative log-prob returned. best_of below n is refused; so is streaming with
 * best_of above n (OpenAI: such results cannot be streamed; vLLM v0 silently answered unstreamed).
 * Null when best_of is absent or equal to n.
 */
export function bestOfRequested(body: { n?: number | null; best_of?: number | null; stream?: boolean | null }, logprobs: number | null): BestOf | null {
  const n = body.n ?? 1;
  const bestOf = body.best_of ?? n;
  if (bestOf < n) throw invalidParam('best_of', `best_of (${bestOf}) must be greater than or equal to n (${n}).`);
  if (bestOf === n) return null;
  if (body.stream) throw invalidParam('best_of', `best_of (${bestOf}) above n (${n}) cannot be streamed: only the best samples are returned, once all have finished.`);
  return { generate: bestOf, keep: n, keepLogprobs: logprobs !== null };
}

/** The engine parameters for best_of: best_of samples, each with its sampled tokens' log-probs (to rank them). */
export function withBestOf<P extends Partial<SamplingParams>>(params: P, bestOf: BestOf | null): P {
  if (!bestOf) return params;
  return { ...params, n: bestOf.generate, logprobs: params.logprobs ?? 0 };
}

export interface PromptDelta {
  prompt: number;
  delta: GenerateDelta;
}

/**
 * Of every prompt's finished samples, keeps the `keep` with the highest cumulative log-prob (the
 * lower sample index on ties), renumbered 0..keep-1 in that order, their deltas in arrival order;
 * log-probs are dropped unless asked. `discardedTokens`: tokens of the samples not returned.
 */
export function pickBestOf(deltas: PromptDelta[], bestOf: BestOf): { deltas: PromptDelta[]; discardedTokens: number } {
  const cumulative = new Map<string, number>();
  const key = (prompt: number, index: number) => `${prompt}:${index}`;
  for (const { prompt, delta } of deltas) {
    let sum = cumulative.get(key(prompt, delta.index)) ?? 0;
    for (const lp of delta.logprobs ?? []) sum += lp.logprob;
    cumulative.set(key(prompt, delta.index), sum);
  }
  const rank = new Map<string, number>();
  const prompts = new Set(deltas.map((d) => d.prompt));
  for (const prompt of prompts) {
    const order = Array.from({ length: bestOf.generate }, (_, index) => index).sort(
      (a, b) => (cumulative.get(key(prompt, b)) ?? -Infinity) - (cumulative.get(key(prompt, a)) ?? -Infinity) || a - b,
    );
    order.slice(0, bestOf.keep).forEach((index, r) => rank.set(key(prompt, index), r));
  }
  const kept: PromptDelta[] = [];
  let discardedTokens = 0;
  for (const { prompt, delta } of deltas) {
    const r = rank.get(key(prompt, delta.index));
    if (r === undefined) {
      discardedTokens += delta.tokenIds.length;
      continue;
    }
    kept.push({ prompt, delta: { ...delta, index: r, logprobs: bestOf.keepLogprobs ? delta.logprobs : null } });
  }
  return { deltas: kept, discardedTokens };
}
