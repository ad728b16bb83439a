import type { BenchTokenizer } from '../../src/bench/tokenizer.js';

/** A tokenizer with one token per whitespace-separated word, plus a BOS token with special tokens on. */
export const wordTokenizer: BenchTokenizer = {
  encode(text: string, addSpecialTokens = true): number[] {
    const words = text.split(/\s+/).filter((w) => w.length > 0);
    return [...(addSpecialTokens ? [0] : []), ...words.map((_, i) => i + 1)];
  },
  decode(ids: ArrayLike<number>): string {
    return Array.from(ids, (id) => `w${id}`).join(' ');
  },
};

/** A text of n words: encode() gives n tokens plus BOS. */
export function words(n: number, word = 'word'): string {
  return Array.from({ length: n }, () => word).join(' ');
}
