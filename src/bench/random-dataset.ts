import { UserError } from '../errors.js';
import type { PromptCompletion } from './sharegpt.js';
import type { SeededRandom } from './seeded-random.js';
import type { BenchTokenizer } from './tokenizer.js';
import type { BenchRequest } from './types.js';

export interface RandomDatasetOptions {
  numPrompts: number;
  inputLen: number;
  outputLen: number;
  rangeRatio: number;
}

/**
 * bench_serving v0.3.0's random dataset: input lengths uniform in [max(in*ratio, 1), in], output
 * lengths in [out*ratio, out]; each prompt is a ShareGPT prompt's tokens (BOS included) repeated
 * or cut to its length, decoded back to text.
 */
export function sampleRandomRequests(
  pairs: readonly PromptCompletion[],
  options: RandomDatasetOptions,
  tokenizer: BenchTokenizer,
  random: SeededRandom,
): BenchRequest[] {
  const { numPrompts, inputLen, outputLen, rangeRatio } = options;
  if (inputLen < 1 || outputLen < 0) throw new UserError('--random-input-len must be at least 1 and --random-output-len at least 0');
  if (!(rangeRatio >= 0 && rangeRatio <= 1)) throw new UserError(`--random-range-ratio ${rangeRatio} must be in [0, 1]`);
  const inputLens = Array.from({ length: numPrompts }, () => random.integer(Math.max(Math.trunc(inputLen * rangeRatio), 1), inputLen));
  const outputLens = Array.from({ length: numPrompts }, () => random.integer(Math.trunc(outputLen * rangeRatio), outputLen));
  const shuffled = random.shuffle([...pairs]);
  const requests: BenchRequest[] = [];
  for (const [prompt] of shuffled) {
    const i = requests.length;
    if (i === numPrompts) break;
    const promptIds = tokenizer.encode(prompt);
    if (promptIds.length === 0) continue;
    const target = inputLens[i]!;
    const ids = promptIds.length > target ? promptIds.slice(0, target) : repeatTo(promptIds, target);
    requests.push({ prompt: tokenizer.decode(ids, false), promptLen: target, outputLen: outputLens[i]! });
  }
  return requests;
}

function repeatTo(ids: number[], length: number): number[] {
  const out: number[] = [];
  while (out.length < length) out.push(...ids);
  return out.slice(0, length);
}
