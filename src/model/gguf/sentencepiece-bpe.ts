import { TokenType, type GgufVocabulary } from './gguf-vocabulary.js';

const spaceMarker = '\u2581';

type Json = Record<string, any>;

/**
 * Splits normalized text into runs of `▁` with the text up to the next `▁`. Without it the
 * whole text is one BPE word (as in transformers' Llama 2 tokenizer), and encoding a long
 * prompt takes seconds; with it words are merged (and cached) one by one. The result is the same
 * whenever no piece has a `▁` after another character: no merge can then cross a split.
 */
const splitBeforeSpaces = { type: 'Split', pattern: { Regex: `${spaceMarker}*[^${spaceMarker}]+|${spaceMarker}+` }, behavior: 'Isolated', invert: false };

/** Every piece holds `▁` only as a prefix (SentencePiece's split_by_whitespace, as Llama 2's). */
function spaceMarkerOnlyLeads(tokens: string[]): boolean {
  const inner = new RegExp(`[^${spaceMarker}]${spaceMarker}`);
  return tokens.every((t) => !inner.test(t));
}

/**
 * A SentencePiece vocabulary (pieces and scores, llama.cpp's `llama` tokenizer) as a Hugging Face
 * BPE tokenizer.json, the way transformers converts one (GGUFLlamaConverter): every split of a
 * piece into two pieces is a merge, ranked by the piece's score, highest first. Merging the best
 * scoring adjacent pair until none is left is what llama.cpp's SentencePiece tokenizer does;
 * characters no piece covers fall back to `<0xNN>` byte pieces. Spaces become `▁`, with one
 * prepended to each run of text when `addSpacePrefix` (llama.cpp's add_space_prefix).
 */
export function sentencePieceModel(vocabulary: GgufVocabulary, addSpacePrefix: boolean): Json {
  const { tokens, types } = vocabulary;
  const vocab: Record<string, number> = {};
  tokens.forEach((token, id) => {
    vocab[token] = id;
  });
  const added = tokens.flatMap((token, id) => {
    const type = types[id];
    if (type !== TokenType.control && type !== TokenType.userDefined && type !== TokenType.unknown) return [];
    return [{ id, content: token, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type !== TokenType.userDefined }];
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: 'Sequence',
      normalizers: [...(addSpacePrefix ? [{ type: 'Prepend', prepend: spaceMarker }] : []), { type: 'Replace', pattern: { String: ' ' }, content: spaceMarker }],
    },
    pre_tokenizer: spaceMarkerOnlyLeads(tokens) ? splitBeforeSpaces : null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: spaceMarker }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: vocabulary.unk === null ? null : tokens[vocabulary.unk],
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: mergesFromScores(vocabulary),
    },
  };
}


/**
 * Every way to build a piece from two pieces, best piece score first; among the splits of one
 * piece, the better scoring halves first (transformers' order). Pairs, not "a b" strings: a
 * piece may hold a space.
 */
export function mergesFromScores({ tokens, scores }: GgufVocabulary): [string, string][] {
  const idOf = new Map<string, number>();
  tokens.forEach((token, id) => idOf.set(token, id));
  const candidates: { left: number; right: number; piece: number }[] = [];
  idOf.forEach((id, token) => {
    const chars = Array.from(token);
    const local: { left: number; right: number; piece: number }[] = [];
    for (let k = 1; k < chars.length; k++) {
      const left = idOf.get(chars.slice(0, k).join(''));
      const right = idOf.get(chars.slice(k).join(''));
      if (left !== undefined && right !== undefined) local.push({ left, right, piece: id });
    }
    local.sort((a, b) => scores[b.left]! - scores[a.left]! || scores[b.right]! - scores[a.right]!);
    candidates.push(...local);
  });
  // Array.prototype.sort is stable: equal scores keep the order above.
  candidates.sort((a, b) => scores[b.piece]! - scores[a.piece]!);
  return candidates.map((m) => [tokens[m.left]!, tokens[m.right]!]);
}
