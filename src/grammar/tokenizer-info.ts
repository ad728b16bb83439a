import type { Tokenizer } from '../model/tokenizer.js';

type Json = Record<string, any>;

/** What xgrammar needs to know of a vocabulary: every token's text as stored, and how to decode it. */
export interface GrammarVocabulary {
  /** Token strings by id as tokenizer.json stores them (byte-level or SentencePiece form), '' for unused ids. */
  encoded: string[];
  /** xgrammar's name for the decoding: byte-level BPE (Llama 3), SentencePiece byte fallback (Llama 2), or raw text. */
  type: 'byte_level' | 'byte_fallback' | 'raw';
  /** SentencePiece tokenizers that put a space before the text. */
  prependSpace: boolean;
}

/** The vocabulary of `tokenizer`, padded to `vocabSize` (the logits' width, which may exceed the tokenizer's). */
export function grammarVocabulary(tokenizer: Tokenizer, vocabSize: number): GrammarVocabulary {
  const json = tokenizer.json;
  const encoded = new Array<string>(Math.max(vocabSize, tokenizer.vocabSize)).fill('');
  const vocab = json.model?.vocab ?? {};
  if (Array.isArray(vocab)) vocab.forEach((entry: [string, number] | string, id: number) => (encoded[id] = Array.isArray(entry) ? entry[0] : entry));
  else for (const [token, id] of Object.entries<number>(vocab)) encoded[id] = token;
  for (const t of (json.added_tokens ?? []) as { id: number; content: string }[]) encoded[t.id] = t.content;
  return { encoded, type: vocabularyType(json.decoder), prependSpace: prependsSpace(json) };
}

function vocabularyType(decoder: Json | null | undefined): GrammarVocabulary['type'] {
  const types = decoderTypes(decoder);
  if (types.includes('ByteLevel')) return 'byte_level';
  if (types.includes('ByteFallback')) return 'byte_fallback';
  return 'raw';
}

function decoderTypes(decoder: Json | null | undefined): string[] {
  if (!decoder) return [];
  if (decoder.type === 'Sequence') return (decoder.decoders ?? []).flatMap((d: Json) => decoderTypes(d));
  return [decoder.type];
}

function prependsSpace(json: Json): boolean {
  const normalizers: Json[] = json.normalizer?.type === 'Sequence' ? json.normalizer.normalizers : json.normalizer ? [json.normalizer] : [];
  if (normalizers.some((n) => n.type === 'Prepend' && n.prepend === '\u2581')) return true;
  const pre = json.pre_tokenizer;
  return pre?.type === 'Metaspace' && (pre.add_prefix_space === true || pre.prepend_scheme === 'always' || pre.prepend_scheme === 'first');
}
