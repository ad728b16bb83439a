import type { IncrementalDetokenizer, Tokenizer } from '../../model/tokenizer.js';

/** Assumed when the tokenizer has no byte table (Llama 3's longest token has 128 bytes). */
const unknownTokenBytes = 256;

/** Each token's text on its own (for log-prob listings), decoded once and remembered. */
export class TokenText {
  private readonly cache = new Map<number, string>();
  private readonly utf8 = new TextEncoder();

  private longest = -1;

  constructor(private readonly tokenizer: Tokenizer) {}

  /** The most bytes any one token stands for: a text of more characters than context x this cannot fit. */
  get maxTokenBytes(): number {
    if (this.longest < 0) {
      let longest = 0;
      for (let id = 0; id < this.tokenizer.vocabSize; id++) {
        const bytes = this.tokenizer.tokenBytes(id);
        if (bytes === null) {
          longest = unknownTokenBytes;
          break;
        }
        longest = Math.max(longest, bytes.length);
      }
      this.longest = longest;
    }
    return this.longest;
  }

  text(id: number): string {
    let text = this.cache.get(id);
    if (text === undefined) {
      text = this.tokenizer.decode([id], false);
      this.cache.set(id, text);
    }
    return text;
  }

  /** The token's own bytes: a token holding part of a UTF-8 character has bytes its text (U+FFFD) does not show. */
  bytes(id: number): number[] {
    const bytes = this.tokenizer.tokenBytes(id);
    return Array.from(bytes ?? this.utf8.encode(this.text(id)));
  }

  /** A decoder that tells where each token's text starts in a sample's output. */
  offsets(skipSpecialTokens = true): TextOffsets {
    return new TextOffsets(this.tokenizer.newDetokenizer(skipSpecialTokens));
  }
}

/**
 * Character offsets of tokens in the text they decode to, as the engine decodes it: a token that
 * ends inside a character adds nothing until the character is complete.
 */
export class TextOffsets {
  private length = 0;

  constructor(private readonly detokenizer: IncrementalDetokenizer) {}

  /** The offset of this token's text (the text so far), then counts its text. */
  next(id: number): number {
    const at = this.length;
    this.length += this.detokenizer.push(id).length;
    return at;
  }
}
