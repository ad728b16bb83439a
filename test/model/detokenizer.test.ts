import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/bench/seeded-random.js';
import { endsInPartialCharacter, Tokenizer } from '../../src/model/tokenizer.js';

const tokenizer = Tokenizer.llama3();

/** What a plain streaming UTF-8 decoder makes of the same tokens (special tokens skipped). */
function reference(ids: number[]): string {
  const utf8 = new TextDecoder();
  let text = '';
  for (const id of ids) {
    const bytes = tokenizer.tokenBytes(id);
    if (tokenizer.isSpecial(id) || !bytes) continue;
    text += utf8.decode(bytes, { stream: true });
  }
  return text + utf8.decode();
}

describe('incremental detokenizer with cached token texts (issue 17)', () => {
  // Tokens that hold part of a character, or bytes that are not UTF-8 on their own.
  const partial: number[] = [];
  for (let id = 0; id < tokenizer.vocabSize && partial.length < 400; id++) {
    const bytes = tokenizer.tokenBytes(id);
    if (!bytes) continue;
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      partial.push(id);
    }
  }

  it('emits, token by token, exactly what one streaming UTF-8 decoder emits', () => {
    expect(partial.length).toBeGreaterThan(50);
    const random = new SeededRandom(17);
    for (let run = 0; run < 300; run++) {
      const ids = Array.from({ length: random.integer(1, 40) }, () =>
        random.uniform() < 0.5 ? partial[random.integer(0, partial.length - 1)]! : random.integer(0, tokenizer.vocabSize - 1),
      );
      const detokenizer = tokenizer.newDetokenizer();
      const streamed = ids.map((id) => detokenizer.push(id)).join('') + detokenizer.flush();
      expect(streamed).toBe(reference(ids));
      // Piece by piece too: what came out after each token is what the reference had decoded by then.
      const again = tokenizer.newDetokenizer();
      const utf8 = new TextDecoder();
      for (const id of ids) {
        const bytes = tokenizer.tokenBytes(id);
        const expected = tokenizer.isSpecial(id) || !bytes ? '' : utf8.decode(bytes, { stream: true });
        expect(again.push(id)).toBe(expected);
      }
    }
  });

  it('knows when a decoder holds part of a character (WHATWG rules)', () => {
    expect(endsInPartialCharacter([0xe2, 0x80])).toBe(true);
    expect(endsInPartialCharacter([0xe2, 0x80, 0x94])).toBe(false);
    expect(endsInPartialCharacter([0xf0, 0x9f, 0x99])).toBe(true);
    expect(endsInPartialCharacter([0x9f, 0x99, 0x82])).toBe(false); // a 4-byte character's end
    expect(endsInPartialCharacter([0xe0, 0x80])).toBe(false); // E0 needs A0-BF next: already an error
    expect(endsInPartialCharacter([0xed, 0xa0])).toBe(false); // a surrogate: an error
    expect(endsInPartialCharacter([0xc0])).toBe(false); // never a lead byte
    expect(endsInPartialCharacter([0x41, 0xc3])).toBe(true);
    expect(endsInPartialCharacter([0x80])).toBe(false);
  });
});
