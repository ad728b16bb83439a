import type { Tokenizer } from '../../model/tokenizer.js';

/** Each token's text on its own (for log-prob listings), decoded once and remembered. */
export class TokenText {
  private readonly cache = new Map<number, string>();
  private readonly utf8 = new TextEncoder();

  constructor(private readonly tokenizer: Tokenizer) {}

  text(id: number): string {
    let text = this.cache.get(id);
    if (text === undefined) {
      text = this.tokenizer.decode([id], false);
      this.cache.set(id, text);
    }
    return text;
  }

  bytes(id: number): number[] {
    return Array.from(this.utf8.encode(this.text(id)));
  }
}
