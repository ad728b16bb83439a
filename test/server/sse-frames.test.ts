import { describe, expect, it } from 'vitest';
import type { GenerateDelta } from '../../src/engine/types.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import type { Accumulator } from '../../src/server/protocol/accumulator.js';
import { ChatAccumulator } from '../../src/server/protocol/chat-accumulator.js';
import { CompletionAccumulator } from '../../src/server/protocol/completions-accumulator.js';
import { TokenText } from '../../src/server/protocol/token-text.js';

const tokenText = new TokenText(Tokenizer.llama3());

// Text that needs escaping (quotes, backslashes, control characters, a lone surrogate) and text that does not.
const texts = ['Hello', ' "quoted"', ' back\\slash', '\n\t\u0001', ' é 日本', '\ud83d', '', ' 🙂', '</script>'];

/** n samples interleaved; log-probs on some deltas when asked; the last delta of each sample finishes. */
function deltas(n: number, withLogprobs: boolean): GenerateDelta[] {
  const out: GenerateDelta[] = [];
  texts.forEach((text, t) => {
    for (let index = 0; index < n; index++) {
      const last = t === texts.length - 1;
      out.push({
        requestId: 'r',
        index,
        text,
        tokenIds: [1000 + t],
        logprobs: withLogprobs && t % 3 === 1 ? [{ tokenId: 1000 + t, logprob: -0.5, top: [] }] : null,
        finishReason: last ? (index === 0 ? 'stop' : 'length') : null,
        matchedStop: last && index === 0 ? '</s>' : null,
        usage: last ? { promptTokens: 3, completionTokens: texts.length, cachedTokens: 0 } : null,
      });
    }
  });
  return out;
}

/** Feeds one accumulator's frame() and a twin's chunk() the same deltas: the frames must be the chunks' JSON. */
function expectFramesEqualChunks<C, R>(make: () => Accumulator<C, R>, stream: GenerateDelta[], prompts = 1): void {
  const framed = make();
  const chunked = make();
  expect(framed.frame).toBeDefined();
  stream.forEach((delta, i) => {
    const prompt = i % prompts;
    expect(framed.frame!(prompt, delta)).toBe(JSON.stringify(chunked.chunk(prompt, delta)));
  });
  expect(framed.usage.info()).toEqual(chunked.usage.info());
  expect(JSON.stringify(framed.closing())).toBe(JSON.stringify(chunked.closing()));
}

describe('SSE frames from templates (issue 17)', () => {
  for (const includeUsage of [false, true]) {
    for (const withLogprobs of [false, true]) {
      it(`completions: equal JSON.stringify of the chunk (usage ${includeUsage}, logprobs ${withLogprobs}, n 2, 2 prompts, echo)`, () => {
        const make = () =>
          new CompletionAccumulator({
            id: 'cmpl-"x"',
            created: 1700000000,
            model: 'some/model',
            promptLengths: [3, 3],
            n: 2,
            echo: withLogprobs ? null : ['echo one ', 'echo "two" '],
            logprobs: withLogprobs,
            includeUsage,
            tokenText,
          });
        expectFramesEqualChunks(make, deltas(2, withLogprobs), 2);
      });

      it(`chat: equal JSON.stringify of the chunk (usage ${includeUsage}, logprobs ${withLogprobs}, n 3)`, () => {
        const make = () => new ChatAccumulator({ id: 'chatcmpl-1', created: 1700000000, model: 'm\\odel', promptTokens: 3, n: 3, logprobs: withLogprobs, includeUsage, tokenText });
        expectFramesEqualChunks(make, deltas(3, withLogprobs));
      });
    }
  }

  it('chat with tools: equal JSON.stringify of the chunk (the tool-call parser rewrites the delta)', () => {
    let calls = 0;
    const make = () =>
      new ChatAccumulator({ id: 'c', created: 1, model: 'm', promptTokens: 3, n: 1, logprobs: false, includeUsage: false, tokenText, toolCalls: { forced: false, newCallId: () => `call_${calls++ % 100}` } });
    expectFramesEqualChunks(make, deltas(1, false));
  });
});
