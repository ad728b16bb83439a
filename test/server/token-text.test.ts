import { describe, expect, it } from 'vitest';
import type { GenerateDelta } from '../../src/engine/types.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { CompletionAccumulator } from '../../src/server/protocol/completions-accumulator.js';
import { foldAll } from '../../src/server/protocol/accumulator.js';
import { TokenText } from '../../src/server/protocol/token-text.js';

const tokenizer = Tokenizer.llama3();
const tokenText = new TokenText(tokenizer);

function delta(tokenId: number, text: string, finish = false): GenerateDelta {
  return {
    requestId: 'r',
    index: 0,
    text,
    tokenIds: [tokenId],
    logprobs: [{ tokenId, logprob: -1, top: [] }],
    finishReason: finish ? 'length' : null,
    matchedStop: null,
    usage: null,
  };
}

describe('log-prob bytes (issue 18 item 9)', () => {
  it("are the token's own bytes when it holds part of a UTF-8 character", () => {
    // "—" is E2 80 94 in UTF-8; byte-level BPE has a token for its first two bytes.
    const partial = tokenizer.tokenToId('âĢ')!;
    expect(partial).toBeDefined();
    expect(tokenText.text(partial)).toBe('\uFFFD');
    expect(tokenText.bytes(partial)).toEqual([0xe2, 0x80]);
    const hello = tokenizer.encode('hello', false)[0]!;
    expect(tokenText.bytes(hello)).toEqual([...new TextEncoder().encode('hello')]);
  });
});

describe('completion text_offset (issue 18 item 9)', () => {
  const accumulate = (deltas: GenerateDelta[], echo: string | null) => {
    const accumulator = new CompletionAccumulator({
      id: 'c',
      created: 0,
      model: 'm',
      promptLengths: [1],
      n: 1,
      echo: echo === null ? null : [echo],
      logprobs: true,
      includeUsage: false,
      tokenText,
    });
    return foldAll(accumulator, deltas.map((d) => accumulator.chunk(0, d))).choices[0]!;
  };

  it('points into the returned text when text was held back (a possible stop string)', () => {
    const [a, b, c] = [' x', ' y', ' z'].map((t) => tokenizer.encode(t, false)[0]!);
    // " x y" was held back as the possible start of a stop string " x y w", then released with " z".
    const choice = accumulate([delta(a!, ''), delta(b!, ''), delta(c!, ' x y z', true)], 'say:');
    expect(choice.text).toBe('say: x y z');
    for (const [i, token] of choice.logprobs!.tokens.entries()) {
      expect(choice.text.slice(choice.logprobs!.text_offset[i]!).startsWith(token)).toBe(true);
    }
    expect(choice.logprobs!.text_offset).toEqual([4, 6, 8]);
  });

  it('puts the tokens of one character at the character', () => {
    // "—" (E2 80 94) as two byte-level tokens: E2 80, then 94.
    const byteToken = (byte: number) => Array.from({ length: tokenizer.vocabSize }, (_, id) => id).find((id) => {
      const bytes = tokenizer.tokenBytes(id);
      return bytes?.length === 1 && bytes[0] === byte;
    })!;
    const ids = [tokenizer.encode('a', false)[0]!, tokenizer.tokenToId('âĢ')!, byteToken(0x94), tokenizer.encode('b', false)[0]!];
    const text = ['a', '', '—', 'b'];
    const choice = accumulate(ids.map((id, i) => delta(id, text[i]!, i === ids.length - 1)), null);
    expect(choice.text).toBe('a—b');
    expect(choice.logprobs!.text_offset).toEqual([0, 1, 1, 2]);
  });
});
