import { existsSync } from 'node:fs';
import { Tokenizer } from '../model/tokenizer.js';
import { UserError } from '../errors.js';
import { sampleRandomRequests } from './random-dataset.js';
import { SeededRandom } from './seeded-random.js';
import { firstTurnPairs, readShareGptFile, sampleShareGptRequests, type PromptCompletion } from './sharegpt.js';
import { synthesizeShareGpt } from './synth-sharegpt.js';
import type { BenchTokenizer } from './tokenizer.js';
import type { BenchRequest } from './types.js';

export const datasetNames = ['sharegpt', 'random'] as const;
export type DatasetName = (typeof datasetNames)[number];

export interface DatasetOptions {
  datasetName: DatasetName;
  datasetPath?: string;
  numPrompts: number;
  sharegptOutputLen?: number;
  randomInputLen: number;
  randomOutputLen: number;
  randomRangeRatio: number;
  seed: number;
}

/** The benchmark's requests, sampled as bench_serving v0.3.0 does, with its token totals logged. */
export function loadBenchRequests(options: DatasetOptions, tokenizer: BenchTokenizer, log: (line: string) => void): BenchRequest[] {
  if (!(options.numPrompts >= 1)) throw new UserError(`--num-prompts ${options.numPrompts} must be at least 1`);
  const random = new SeededRandom(options.seed);
  let requests: BenchRequest[];
  if (options.datasetName === 'sharegpt') {
    const pairs = firstTurnPairs(readShareGptFile(options.datasetPath));
    requests = sampleShareGptRequests(pairs, { numPrompts: options.numPrompts, fixedOutputLen: options.sharegptOutputLen }, tokenizer, random);
    if (requests.length < options.numPrompts) {
      log(`warning: ${options.datasetPath} gave only ${requests.length} usable prompts of the ${options.numPrompts} asked for`);
    }
  } else {
    const pairs = randomDatasetSource(options, log);
    requests = sampleRandomRequests(
      pairs,
      { numPrompts: options.numPrompts, inputLen: options.randomInputLen, outputLen: options.randomOutputLen, rangeRatio: options.randomRangeRatio },
      tokenizer,
      random,
    );
  }
  log(`#Input tokens: ${requests.reduce((a, r) => a + r.promptLen, 0)}`);
  log(`#Output tokens: ${requests.reduce((a, r) => a + r.outputLen, 0)}`);
  return requests;
}

/**
 * The random dataset takes its prompt tokens from ShareGPT. v0.3.0 downloads the file; here,
 * without a --dataset-path, synthetic ShareGPT text stands in.
 */
function randomDatasetSource(options: DatasetOptions, log: (line: string) => void): PromptCompletion[] {
  if (options.datasetPath !== undefined) {
    if (!existsSync(options.datasetPath)) throw new UserError(`--dataset-path ${options.datasetPath} does not exist`);
    return firstTurnPairs(readShareGptFile(options.datasetPath));
  }
  log('random dataset: no --dataset-path, taking prompt tokens from synthetic ShareGPT text');
  const conversations = synthesizeShareGpt(Tokenizer.llama3(), {
    numConversations: options.numPrompts + 16,
    seed: options.seed,
    exactLengths: false,
  });
  return firstTurnPairs(conversations);
}
