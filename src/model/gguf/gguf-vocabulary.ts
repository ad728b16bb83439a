import { UserError } from '../../errors.js';
import type { GgufMetadata } from './gguf-file.js';

/** llama.cpp's token types (tokenizer.ggml.token_type). */
export const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** The `tokenizer.ggml.*` keys of a GGUF file, checked. */
export interface GgufVocabulary {
  tokens: string[];
  types: number[];
  /** tokenizer.ggml.scores (SentencePiece), empty when absent. */
  scores: number[];
  bos: number | null;
  eos: number | null;
  unk: number | null;
  addBos: boolean;
  addEos: boolean;
}

/** Reads and checks the vocabulary keys; `vocabSize` is the model's (rows of token_embd). */
export function readVocabulary(metadata: GgufMetadata, vocabSize: number, file: string): GgufVocabulary {
  const tokens = metadata['tokenizer.ggml.tokens'];
  if (!Array.isArray(tokens)) throw new UserError(`${file}: no embedded tokenizer (tokenizer.ggml.tokens is missing)`);
  if (tokens.length !== vocabSize) {
    throw new UserError(`${file}: the tokenizer has ${tokens.length} tokens but the model's vocabulary (token_embd.weight) has ${vocabSize} rows`);
  }
  const types = (metadata['tokenizer.ggml.token_type'] as number[] | undefined) ?? [];
  if (types.length !== 0 && types.length !== tokens.length) {
    throw new UserError(`${file}: tokenizer.ggml.token_type has ${types.length} values for ${tokens.length} tokens`);
  }
  const idOf = (key: string): number | null => {
    const v = metadata[key];
    if (v === undefined) return null;
    const id = Number(v);
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new UserError(`${file}: ${key} ${String(v)} is not a token id below ${vocabSize}`);
    return id;
  };
  const bos = idOf('tokenizer.ggml.bos_token_id');
  const eos = idOf('tokenizer.ggml.eos_token_id');
  // llama.cpp adds BOS by default for SentencePiece vocabularies and when the file does not say.
  const addBos = bos !== null && metadata['tokenizer.ggml.add_bos_token'] !== false;
  const addEos = eos !== null && metadata['tokenizer.ggml.add_eos_token'] === true;
  return {
    tokens: tokens as string[],
    types,
    scores: (metadata['tokenizer.ggml.scores'] as number[] | undefined) ?? [],
    bos,
    eos,
    unk: idOf('tokenizer.ggml.unknown_token_id'),
    addBos,
    addEos,
  };
}
