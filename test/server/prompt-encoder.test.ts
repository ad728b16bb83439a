import { describe, expect, it } from 'vitest';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { PromptEncoder } from '../../src/server/prompt-encoder.js';

describe('PromptEncoder', () => {
  const tokenizer = Tokenizer.llama3();
  const words = ['the', 'quick', 'brown', 'fox', 'jumps', 'over', 'lazy', 'dogs', 'ünïcödé', '日本語', '🙂', '\n\n'];
  const longText = Array.from({ length: 3000 }, (_, i) => words[(i * 7 + (i >> 3)) % words.length]).join(' ');

  it('encodes long texts in its thread to exactly what the tokenizer gives in place, concurrently and in any order', async () => {
    const encoder = new PromptEncoder(tokenizer, { thread: true, minThreadChars: 100 });
    try {
      const texts = [longText, longText.slice(500), `<|begin_of_text|>${longText.slice(0, 2000)}`, 'short'];
      const got = await Promise.all(texts.flatMap((text) => [encoder.encode(text, true), encoder.encode(text, false)]));
      const want = texts.flatMap((text) => [tokenizer.encode(text, true), tokenizer.encode(text, false)]);
      expect(got).toEqual(want);
      expect(got[0]!.length).toBeGreaterThan(1000);
    } finally {
      await encoder.close();
    }
  });

  it('without a thread, encodes in place', async () => {
    const encoder = new PromptEncoder(tokenizer);
    expect(await encoder.encode(longText)).toEqual(tokenizer.encode(longText));
    await encoder.close();
  });
});
