import type { Tokenizer } from '../../src/model/tokenizer.js';
import type { SentencePieceVocabulary } from './gguf-writer.js';

const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, byte: 6 } as const;

/**
 * A Llama 2 shaped SentencePiece vocabulary (`<unk>`, `<s>`, `</s>`, the 256 `<0xNN>` byte pieces,
 * then pieces with falling scores) made from the first `pieces` tokens of a byte-level BPE
 * tokenizer: each token whose bytes are whole UTF-8 becomes a piece, spaces written `▁`. No
 * Llama 2 vocabulary ships on npm; this one has the same structure, plus `userDefined` pieces
 * (type 4, matched in raw text as llama.cpp does) appended at the end. `splitByWhitespace`
 * (SentencePiece's default, Llama 2's) leaves out pieces with a `▁` after another character.
 */
export function sentencePieceVocabulary(source: Tokenizer, pieces: number, userDefined: string[] = [], splitByWhitespace = true): SentencePieceVocabulary {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TokenType.unknown, TokenType.control, TokenType.control];
  const scores: number[] = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TokenType.byte);
    scores.push(0);
  }
  const seen = new Set(tokens);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  for (let id = 0; tokens.length < 259 + pieces && id < source.vocabSize; id++) {
    const bytes = source.tokenBytes(id);
    if (bytes === null || source.isSpecial(id)) continue;
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      continue;
    }
    const piece = text.replaceAll(' ', '\u2581');
    if (piece.length === 0 || seen.has(piece) || (splitByWhitespace && /[^\u2581]\u2581/.test(piece))) continue;
    seen.add(piece);
    tokens.push(piece);
    types.push(TokenType.normal);
    scores.push(-(tokens.length - 259));
  }
  for (const piece of userDefined) {
    tokens.push(piece);
    types.push(TokenType.userDefined);
    scores.push(0);
  }
  return { tokens, scores: Float32Array.from(scores), tokenTypes: Int32Array.from(types), bos: 1, eos: 2, unk: 0 };
}
