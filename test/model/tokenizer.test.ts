import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { writeGguf } from '../support/gguf-writer.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { tinyVariant } from '../support/reference-runs.js';

const tokenizer = Tokenizer.llama3();
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const trickyTexts = [
  'Hello, world!',
  'naïve café résumé Ångström ﬁancé Ωμέγα µ',
  'emoji: 👋🏽 🎉🎉 👨‍👩‍👧‍👦 🇫🇷 ❤️',
  '中文分词测试，日本語のテキスト、한국어 텍스트。',
  'numbers 1234567 3.14159 1,000,000 2024-01-31 0x1F 007',
  '  leading spaces\n\n\ttabs\t\tand    runs   of     spaces   \n\n\n',
  "contractions: I'm, don't, we'll, THEY'RE, it's",
  'def f(x):\n    return x ** 2  # square\n',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>',
  '!!!!!!!!!!!!!!!!????....',
  'trailing   ',
  ' ',
];

describe('Llama 3 tokenizer', () => {
  let llama: Llama;
  let llamaModel: LlamaModel;
  let dir: string;

  beforeAll(async () => {
    // A GGUF with the real vocabulary and merges and a minute network: llama.cpp only tokenizes.
    const config = tinyVariant({ hiddenSize: 8, intermediateSize: 16, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 4 });
    dir = mkdtempSync(join(tmpdir(), 'sluice-tok-'));
    const file = join(dir, 'vocab.gguf');
    await writeGguf(file, { config, tokenizer, weights: new DummyWeights(config) }, { dtype: 'f32' });
    llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    llamaModel = await llama.loadModel({ modelPath: file, vocabOnly: true });
  });

  afterAll(async () => {
    await llamaModel?.dispose();
    await llama?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.each(trickyTexts.map((t) => [t]))('agrees with llama.cpp on %j', (text) => {
    expect(tokenizer.encode(text, false)).toEqual(Array.from(llamaModel.tokenize(text, true)));
  });

  it('adds BOS as the tokenizer config says, and llama.cpp reads the same special ids', () => {
    expect(tokenizer.encode('hi')[0]).toBe(128000);
    expect(tokenizer.encode('hi', false)[0]).not.toBe(128000);
    expect(llamaModel.tokens.bos).toBe(128000);
    expect(llamaModel.isEogToken(128009 as never)).toBe(true);
  });

  it.each([
    ['emoji', '👋🏽🎉 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️‍🔥'],
    ['CJK', '東京都は日本の首都です。中文也可以。한국어도 됩니다. 龘靐齉爩鱻'],
    ['mixed', 'naïve 🎉 中文 ok 🤖!'],
  ])('incremental detokenization of %s never emits half a character', (_, text) => {
    const ids = tokenizer.encode(text, false);
    const detokenizer = tokenizer.newDetokenizer();
    const pieces = ids.map((id) => detokenizer.push(id));
    pieces.push(detokenizer.flush());
    for (const piece of pieces) {
      expect(piece).not.toContain('\uFFFD');
      expect(piece).not.toMatch(loneSurrogate);
    }
    // Some tokens end inside a multi-byte character: their text waits for the next token.
    expect(pieces.slice(0, -1).some((p) => p === '')).toBe(true);
    expect(pieces.join('')).toBe(tokenizer.decode(ids));
    expect(pieces.join('')).toBe(text);
  });

  it('renders the Llama 3 chat format', () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi!' },
    ];
    const text = tokenizer.applyChatTemplate(messages);
    expect(text).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    const ids = tokenizer.encode(text, false);
    expect(ids.slice(0, 2)).toEqual([128000, 128006]);
    expect(ids.filter((id) => id === 128009)).toHaveLength(2);
    expect(ids.slice(-2)).toEqual([128007, 271]);
    expect(tokenizer.applyChatTemplate(messages.slice(1), false)).toBe('<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>');
  });
});
