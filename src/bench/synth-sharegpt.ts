import type { Tokenizer } from '../model/tokenizer.js';
import { SeededRandom } from './seeded-random.js';
import type { ShareGptConversation } from './sharegpt.js';

/**
 * Token-length model of real ShareGPT first turns (Llama 3 tokenizer, BOS included, as the
 * benchmark counts them): log-normal prompt and completion lengths whose means after the
 * benchmark's filter are about 227 and 190 tokens, with tails past the 1024/2048 limits so the
 * filter drops a few percent, as it does on the real file.
 */
export const shareGptLengthModel = {
  promptMedian: 165,
  promptSigma: 1.15,
  outputMedian: 140,
  outputSigma: 0.8,
  /** Longest text generated; anything this long is filtered out anyway. */
  maxLen: 3000,
  /** Share of conversations with a single turn (the benchmark skips those). */
  singleTurnShare: 0.02,
} as const;

export interface SynthOptions {
  numConversations: number;
  seed: number;
  /**
   * When true (the default) every text re-tokenizes to exactly its drawn length. The random
   * dataset, which cuts prompts by tokens anyway, can skip that check.
   */
  exactLengths?: boolean;
}

export interface SynthLengths {
  promptLen: number;
  outputLen: number;
  singleTurn: boolean;
}

/** The drawn (prompt, completion) token lengths, BOS included, of each synthetic conversation. */
export function drawSynthLengths(random: SeededRandom): SynthLengths {
  const m = shareGptLengthModel;
  const draw = (median: number, sigma: number) =>
    Math.min(m.maxLen, Math.max(1, Math.round(Math.exp(Math.log(median) + sigma * random.normal()))));
  const promptLen = draw(m.promptMedian, m.promptSigma);
  const outputLen = draw(m.outputMedian, m.outputSigma);
  return { promptLen, outputLen, singleTurn: random.uniform() < m.singleTurnShare };
}

/** Writes ShareGPT-format conversations made of real Llama 3 word tokens with drawn lengths. */
export function synthesizeShareGpt(tokenizer: Tokenizer, options: SynthOptions): ShareGptConversation[] {
  // Lengths and words come from separate streams, so the lengths depend on the seed alone.
  const random = new SeededRandom(options.seed);
  const text = new TextMaker(tokenizer, new SeededRandom(options.seed ^ 0x5f3759df), options.exactLengths ?? true);
  const conversations: ShareGptConversation[] = [];
  for (let i = 0; i < options.numConversations; i++) {
    const lengths = drawSynthLengths(random);
    const turns = [{ from: 'human', value: text.make(lengths.promptLen - 1) }];
    if (!lengths.singleTurn) turns.push({ from: 'gpt', value: text.make(lengths.outputLen - 1) });
    conversations.push({ id: `synthetic-${options.seed}-${i}`, conversations: turns });
  }
  return conversations;
}

/** Makes text that tokenizes (without special tokens) to a given number of tokens. */
class TextMaker {
  private readonly words: number[];
  private readonly comma: number;
  private readonly period: number;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly random: SeededRandom,
    private readonly exact: boolean,
  ) {
    this.words = [];
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      const token = tokenizer.idToToken(id);
      // 'Ġ' is the byte-level BPE form of a leading space: " word" tokens.
      if (token !== undefined && /^Ġ[a-z]{2,12}$/.test(token)) this.words.push(id);
    }
    this.comma = tokenizer.encode(',', false)[0]!;
    this.period = tokenizer.encode('.', false)[0]!;
  }

  make(length: number): string {
    if (length <= 0) return '';
    const ids: number[] = [];
    this.extend(ids, length);
    let text = this.tokenizer.decode(ids).trimStart();
    if (!this.exact) return text;
    for (let attempt = 0; attempt < 50; attempt++) {
      const actual = this.tokenizer.encode(text, false).length;
      if (actual === length) return text;
      if (actual > length) ids.length = Math.max(0, ids.length - (actual - length));
      else this.extend(ids, ids.length + (length - actual));
      text = this.tokenizer.decode(ids).trimStart();
    }
    throw new Error(`could not make text of exactly ${length} tokens`);
  }

  private extend(ids: number[], length: number): void {
    while (ids.length < length) {
      const last = ids[ids.length - 1];
      const punctuationAllowed = last !== undefined && last !== this.comma && last !== this.period && ids.length < length - 1;
      const r = this.random.uniform();
      if (punctuationAllowed && r < 0.06) ids.push(this.period);
      else if (punctuationAllowed && r < 0.12) ids.push(this.comma);
      // Frequent (low-id) words more often, like natural text.
      else ids.push(this.words[Math.floor(this.words.length * this.random.uniform() ** 3)]!);
    }
  }
}
