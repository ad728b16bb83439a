import { existsSync, readFileSync, statSync } from 'node:fs';
import { UserError } from '../errors.js';
import { jsonListElements } from './json-list.js';
import type { SeededRandom } from './seeded-random.js';
import type { BenchTokenizer } from './tokenizer.js';
import type { BenchRequest } from './types.js';

export const shareGptFileName = 'ShareGPT_V3_unfiltered_cleaned_split.json';

export interface ShareGptTurn {
  from: string;
  value: string;
}

export interface ShareGptConversation {
  id: string;
  conversations: ShareGptTurn[];
}

/** The first two turns of a conversation: (prompt, completion). */
export type PromptCompletion = readonly [prompt: string, completion: string];

export function shareGptMissingMessage(path: string | undefined): string {
  const what = path === undefined ? 'the ShareGPT dataset needs --dataset-path' : `--dataset-path ${path} does not exist`;
  return (
    `${what}. ShareGPT cannot be downloaded from here: get ${shareGptFileName} from the ` +
    'Hugging Face dataset anon8231489123/ShareGPT_Vicuna_unfiltered and pass its path, or write a ' +
    'synthetic file with the same length statistics: sluice dataset synth-sharegpt --num-conversations 6000 -o sharegpt-synth.json'
  );
}

/** Reads a ShareGPT-format file: a JSON list of {id, conversations: [{from, value}, ...]}. */
export function readShareGptFile(path: string | undefined): ShareGptConversation[] {
  if (path === undefined || !existsSync(path)) throw new UserError(shareGptMissingMessage(path));
  if (!statSync(path).isFile()) throw new UserError(`--dataset-path ${path} is not a file`);
  const conversations: ShareGptConversation[] = [];
  let index = 0;
  try {
    for (const text of jsonListElements(readFileSync(path), path)) {
      conversations.push(validateConversation(JSON.parse(text), path, index++));
    }
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${path}: entry ${index}: ${(e as Error).message}`);
  }
  return conversations;
}

function validateConversation(entry: any, path: string, index: number): ShareGptConversation {
  const turns = entry?.conversations;
  if (!Array.isArray(turns)) throw new UserError(`${path}: entry ${index} has no "conversations" list (not a ShareGPT file?)`);
  turns.forEach((turn: any, t: number) => {
    if (typeof turn?.value !== 'string') {
      throw new UserError(`${path}: entry ${index}, turn ${t}: "value" must be a string`);
    }
  });
  return { id: String(entry.id ?? index), conversations: turns };
}

/** Keeps conversations with at least two turns and takes their first two as (prompt, completion). */
export function firstTurnPairs(conversations: ShareGptConversation[]): PromptCompletion[] {
  return conversations.filter((c) => c.conversations.length >= 2).map((c) => [c.conversations[0]!.value, c.conversations[1]!.value] as const);
}

export type ShareGptDropReason = 'prompt too short' | 'output too short' | 'prompt too long' | 'prompt + output too long';

/** bench_serving v0.3.0's filter; null keeps the pair. The total rule applies only without a fixed output length. */
export function shareGptDropReason(promptLen: number, outputLen: number, fixedOutputLen?: number): ShareGptDropReason | null {
  if (promptLen < 4) return 'prompt too short';
  if (outputLen < 4) return 'output too short';
  if (promptLen > 1024) return 'prompt too long';
  if (fixedOutputLen === undefined && promptLen + outputLen > 2048) return 'prompt + output too long';
  return null;
}

export interface ShareGptSampleOptions {
  numPrompts: number;
  /** --sharegpt-output-len: the max_tokens of every request instead of the completion's length. */
  fixedOutputLen?: number;
}

/**
 * Shuffles the pairs with the seeded generator, tokenizes prompt and completion (special tokens
 * included), filters, and stops when numPrompts pairs are kept.
 */
export function sampleShareGptRequests(
  pairs: readonly PromptCompletion[],
  options: ShareGptSampleOptions,
  tokenizer: BenchTokenizer,
  random: SeededRandom,
): BenchRequest[] {
  if (options.fixedOutputLen !== undefined && options.fixedOutputLen < 4) {
    throw new UserError(`--sharegpt-output-len ${options.fixedOutputLen} is too small (at least 4)`);
  }
  const shuffled = random.shuffle([...pairs]);
  const requests: BenchRequest[] = [];
  for (const [prompt, completion] of shuffled) {
    if (requests.length === options.numPrompts) break;
    const promptLen = tokenizer.encode(prompt).length;
    const outputLen = options.fixedOutputLen ?? tokenizer.encode(completion).length;
    if (shareGptDropReason(promptLen, outputLen, options.fixedOutputLen) !== null) continue;
    requests.push({ prompt, promptLen, outputLen });
  }
  return requests;
}
