import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type Token } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { openModel, type LoadedModel } from '../../src/model/load.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { UserError } from '../../src/errors.js';
import { MetaType, writeGguf, type Kv, type SentencePieceVocabulary } from '../support/gguf-writer.js';
import { tinyVariant } from '../support/reference-runs.js';
import { sentencePieceVocabulary } from '../support/sentencepiece-vocabulary.js';

// A Llama 2 style GGUF tokenizer (tokenizer.ggml.model "llama": pieces, scores, byte fallback)
// read by sluice and by llama.cpp (node-llama-cpp) from the same file: the ids must be equal.

const pieces = 12000;
const userDefined = ['<|im_start|>', '<|im_end|>'];
const vocabulary = sentencePieceVocabulary(Tokenizer.llama3(), pieces, userDefined);

const texts = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  ' one leading space',
  '   three leading spaces and two trailing  ',
  'digits 0 7 42 1234567890 3.14159 -12,500.75',
  'naïve café, déjà vu, Ελληνικά, кириллица, 日本語のテキスト',
  'byte fallback: 🦙🚀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u{10FFFD} ꙮ',
  'tabs\tand\nnew lines\n\n    indented code();\r\n',
  'a',
  ' ',
  '▁ a literal space marker',
  '<0x41> is not a byte token in text',
];
const textsWithSpecials = ['<s>[INST] hi [/INST]</s>', '<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n', 'x</s>y', '<unk>'];

let llama: Llama;
let dir: string;
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  dir = mkdtempSync(join(tmpdir(), 'sluice-gguf-spm-'));
});
afterAll(async () => {
  await llama?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function bothSides(name: string, v: SentencePieceVocabulary): Promise<{ ours: LoadedModel; theirs: LlamaModel; close: () => Promise<void> }> {
  const config = tinyVariant({ vocabSize: v.tokens.length, bosTokenId: v.bos, eosTokenIds: [v.eos] });
  const file = join(dir, name);
  await writeGguf(file, { config, tokenizer: v, weights: new DummyWeights(config, 1) }, { dtype: 'f32' });
  const ours = await openModel({ modelPath: file });
  const theirs = await llama.loadModel({ modelPath: file, vocabOnly: true });
  return {
    ours,
    theirs,
    close: async () => {
      await ours.weights.close();
      await theirs.dispose();
    },
  };
}

describe('SentencePiece GGUF tokenizer (tokenizer.ggml.model "llama")', () => {
  it.each([
    { pieces: 'split at spaces, as Llama 2 (words merged one by one)', v: vocabulary, splitsWords: true },
    { pieces: 'with a ▁ inside (the whole text merged at once)', v: sentencePieceVocabulary(Tokenizer.llama3(), pieces, userDefined, false), splitsWords: false },
  ])('pieces $pieces: token ids equal llama.cpp on unicode, spaces, digits, byte fallback and special tokens; BOS as the file says', async ({ v, splitsWords }) => {
    const { ours, theirs, close } = await bothSides(`spm-${splitsWords}.gguf`, v);
    try {
      expect(ours.tokenizer.json.pre_tokenizer !== null).toBe(splitsWords);
      for (const text of [...texts, ...textsWithSpecials]) {
        expect(ours.tokenizer.encode(text, false), JSON.stringify(text)).toEqual(theirs.tokenize(text, true));
      }
      // The byte-fallback text really fell back to bytes, and the vocabulary is big enough to merge words.
      const fallback = ours.tokenizer.encode(texts[6]!, false);
      expect(fallback.filter((id) => id >= 3 && id < 259).length).toBeGreaterThan(8);
      expect(ours.tokenizer.encode(texts[1]!, false).length).toBeLessThan(texts[1]!.length / 3);
      expect(ours.tokenizer.encode('Hello world', true)).toEqual([v.bos, ...ours.tokenizer.encode('Hello world', false)]);
      expect(ours.tokenizer.bosTokenId).toBe(v.bos);
      expect(ours.stopTokenIds).toContain(v.eos);
    } finally {
      await close();
    }
  }, 300_000);

  it('decoding round-trips the text, and the streaming detokenizer writes the same characters', async () => {
    const { ours, theirs, close } = await bothSides('spm-decode.gguf', vocabulary);
    try {
      // A literal ▁ in the text reads back as a space, in SentencePiece as in llama.cpp.
      for (const text of texts.filter((t) => !t.includes('\u2581'))) {
        const ids = ours.tokenizer.encode(text, false);
        expect(ours.tokenizer.decode(ids), JSON.stringify(text)).toBe(text);
        expect(theirs.detokenize(ids as Token[])).toBe(text);
        const stream = ours.tokenizer.newDetokenizer();
        const streamed = ids.map((id) => stream.push(id)).join('') + stream.flush();
        // The stream keeps the space the prefix added (it continues a prompt); otherwise it is the text.
        expect(streamed, JSON.stringify(text)).toBe(` ${text}`);
      }
    } finally {
      await close();
    }
  }, 300_000);

  it('add_space_prefix false, add_bos_token false and add_eos_token true are honoured as llama.cpp does', async () => {
    const v = { ...vocabulary, addSpacePrefix: false, addBos: false, addEos: true };
    const { ours, theirs, close } = await bothSides('spm-no-prefix.gguf', v);
    try {
      for (const text of [...texts, ...textsWithSpecials]) {
        expect(ours.tokenizer.encode(text, false), JSON.stringify(text)).toEqual(theirs.tokenize(text, true));
      }
      const hello = ours.tokenizer.encode('Hello', false);
      expect(ours.tokenizer.idToToken(hello[0]!)).toBe('Hello');
      expect(ours.tokenizer.encode('Hello', true)).toEqual([...hello, v.eos]);
      expect(ours.tokenizer.decode(ours.tokenizer.encode(' spaced out ', false))).toBe(' spaced out ');
    } finally {
      await close();
    }
  }, 300_000);
});

describe('bad SentencePiece vocabularies: one line naming the file and the problem', () => {
  const small = sentencePieceVocabulary(Tokenizer.llama3(), 200);
  const config = tinyVariant({ vocabSize: small.tokens.length, bosTokenId: small.bos, eosTokenIds: [small.eos] });

  async function failure(name: string, edit: (kvs: Kv[]) => Kv[]): Promise<string> {
    const file = join(dir, name);
    await writeGguf(file, { config, tokenizer: small, weights: new DummyWeights(config, 1) }, { dtype: 'f32', editMetadata: edit });
    const error = await openModel({ modelPath: file }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(UserError);
    const message = (error as Error).message;
    expect(message.startsWith(file)).toBe(true);
    expect(message).not.toContain('\n');
    return message;
  }

  it('scores or token types that do not cover the tokens; a tokenizer model sluice does not read', async () => {
    const shorter = (key: string) => (kvs: Kv[]) =>
      kvs.map((kv) => (kv.key === key && kv.type === MetaType.ARRAY && kv.itemType !== MetaType.STRING ? ({ ...kv, value: kv.value.slice(0, 100) } as Kv) : kv));
    expect(await failure('short-scores.gguf', shorter('tokenizer.ggml.scores'))).toMatch(/tokenizer.ggml.scores has 100 values for 459 tokens/);
    expect(await failure('short-types.gguf', shorter('tokenizer.ggml.token_type'))).toMatch(/tokenizer.ggml.token_type has 100 values for 459 tokens/);
    const model = (name: string) => (kvs: Kv[]) => kvs.map((kv) => (kv.key === 'tokenizer.ggml.model' ? { ...kv, value: name } : kv) as Kv);
    expect(await failure('t5.gguf', model('t5'))).toMatch(/tokenizer model "t5" is not supported \(sluice reads tokenizer.ggml.model "gpt2", byte-level BPE, and "llama", SentencePiece\)/);
  });
});
