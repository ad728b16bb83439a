import { open, type FileHandle } from 'node:fs/promises';
import type { LlamaConfig, WeightDType } from '../../src/model/config.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/model/dtype.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import type { Tokenizer } from '../../src/model/tokenizer.js';
import { expectedTensors, layerPrefix, type WeightSource } from '../../src/model/weights.js';
import { UserError } from '../../src/errors.js';
import { quantBlock, quantizeRow, type QuantType } from './ggml-quantize.js';

/** The type of the matrices (norms and rope factors stay f32, as llama.cpp's converter keeps them). */
export type GgufDType = 'f32' | 'f16' | 'bf16' | QuantType;

export interface GgufWriteOptions {
  dtype: GgufDType;
  /** Write a split model: `name-00001-of-0000N.gguf` and so on, tensors spread in order. */
  split?: number;
  /** Changes the metadata before it is written (tests of bad files). */
  editMetadata?: (kvs: Kv[]) => Kv[];
}

export interface GgufModel {
  config: LlamaConfig;
  /** A byte-level BPE tokenizer (written as llama.cpp's "gpt2" model) or a SentencePiece vocabulary ("llama"). */
  tokenizer: Tokenizer | SentencePieceVocabulary;
  weights: WeightSource;
}

/** llama.cpp's SentencePiece vocabulary: pieces with scores and token types. */
export interface SentencePieceVocabulary {
  tokens: string[];
  scores: Float32Array;
  tokenTypes: Int32Array;
  bos: number;
  eos: number;
  unk: number;
  /** tokenizer.ggml.add_space_prefix; left out of the file when undefined (llama.cpp then assumes true). */
  addSpacePrefix?: boolean;
  addBos?: boolean;
  addEos?: boolean;
}

const alignment = 32;

enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q8_0 = 8,
  Q4_K = 12,
  Q6_K = 14,
  BF16 = 30,
}

const ggmlTypeOf: Record<GgufDType, GgmlType> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
  q8_0: GgmlType.Q8_0,
  q4_0: GgmlType.Q4_0,
  q4_k: GgmlType.Q4_K,
  q6_k: GgmlType.Q6_K,
};

/** llama.cpp's general.file_type (enum llama_ftype) of a file whose matrices are all of one type. */
const fileTypeOf: Record<GgufDType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k: 15, q6_k: 18, bf16: 32 };

function dtypeOfType(type: GgmlType): GgufDType {
  return (Object.keys(ggmlTypeOf) as GgufDType[]).find((k) => ggmlTypeOf[k] === type)!;
}

/** Bytes of one row of `cols` elements. */
function rowBytes(type: GgmlType, cols: number): number {
  const dtype = dtypeOfType(type);
  if (dtype === 'f32') return cols * 4;
  if (dtype === 'f16' || dtype === 'bf16') return cols * 2;
  const block = quantBlock[dtype];
  if (cols % block.size !== 0) throw new Error(`${dtype}: rows of ${cols} are not whole blocks of ${block.size}`);
  return (cols / block.size) * block.bytes;
}

export enum MetaType {
  UINT16 = 2,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
}

const tokenTypeNormal = 1;
const tokenTypeControl = 3;
const tokenTypeUserDefined = 4;
const tokenTypeUnused = 5;

/** How one GGUF tensor is made from the weight source. */
interface TensorPlan {
  name: string;
  /** GGUF dims, contiguous first. */
  dims: number[];
  type: GgmlType;
  /** The HF tensor it comes from, or the values themselves (rope factors). */
  source: string | Float32Array;
  /** Q/K: the number of heads whose rows are permuted to llama.cpp's rotary pairing. */
  permuteHeads?: number;
  offset: number;
  bytes: number;
}

/**
 * Writes a Llama model as a GGUF v3 file that llama.cpp loads (the independent reference of the
 * parity tests, and a way to benchmark llama.cpp on the same random weights). Tensors are
 * streamed one at a time: the model is never held twice.
 *
 * llama.cpp's own conventions that matter:
 * - dims are listed contiguous-first, so an HF [out, in] matrix is written as is with dims [in, out];
 * - the llama architecture rotates adjacent element pairs where HF checkpoints pair x[i] with
 *   x[i + d/2], so Q and K rows are permuted per head (as llama.cpp's converter does);
 * - rope scaling is given as per-frequency divisors in `rope_freqs.weight`, which llama.cpp
 *   applies as theta / factor[i] (its converter writes llama3 scaling that way).
 */
export async function writeGguf(file: string, model: GgufModel, options: GgufWriteOptions): Promise<string[]> {
  const { config, tokenizer, weights } = model;
  const plans = planTensors(config, options.dtype);
  for (const p of plans) p.bytes = p.dims.length === 1 ? p.dims[0]! * 4 : rowBytes(p.type, p.dims[0]!) * p.dims[1]!;
  const count = options.split ?? 1;
  const meta = (options.editMetadata ?? ((kvs) => kvs))(metadata(config, tokenizer, options.dtype));
  const perFile = Math.ceil(plans.length / count);
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = count === 1 ? file : file.replace(/\.gguf$/, `-${String(i + 1).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.gguf`);
    const shardPlans = plans.slice(i * perFile, (i + 1) * perFile);
    // As llama.cpp's gguf-split: every shard says where it stands; the first also carries the model's metadata.
    const splitKvs: Kv[] =
      count === 1
        ? []
        : [
            { key: 'split.no', type: MetaType.UINT16, value: i },
            { key: 'split.count', type: MetaType.UINT16, value: count },
            { key: 'split.tensors.count', type: MetaType.INT32, value: plans.length },
          ];
    await writeFile(name, i === 0 ? [...meta, ...splitKvs] : splitKvs, shardPlans, config, weights);
    files.push(name);
  }
  return files;
}

async function writeFile(file: string, meta: Kv[], plans: TensorPlan[], config: LlamaConfig, weights: WeightSource): Promise<void> {
  let offset = 0;
  for (const p of plans) {
    p.offset = offset;
    offset = alignUp(offset + p.bytes);
  }
  const header = new ByteWriter();
  header.u32(0x46554747); // "GGUF"
  header.u32(3);
  header.u64(plans.length);
  header.u64(meta.length);
  for (const kv of meta) writeKv(header, kv);
  for (const p of plans) {
    header.string(p.name);
    header.u32(p.dims.length);
    for (const d of p.dims) header.u64(d);
    header.u32(p.type);
    header.u64(p.offset);
  }
  header.padTo(alignment);

  const out = await open(file, 'w');
  try {
    let position = 0;
    const write = async (bytes: Uint8Array) => {
      await writeFully(out, bytes, position);
      position += bytes.byteLength;
    };
    await write(header.bytes());
    const dataStart = position;
    for (const p of plans) {
      await writeTensor(p, config, weights, write);
      const pad = dataStart + alignUp(p.offset + p.bytes) - position;
      if (pad > 0) await write(new Uint8Array(pad));
    }
  } finally {
    await out.close();
  }
}

function planTensors(config: LlamaConfig, dtype: GgufDType): TensorPlan[] {
  const matrixType = ggmlTypeOf[dtype];
  const names = new Set(expectedTensors(config).map((t) => t.name));
  const hfShape = new Map(expectedTensors(config).map((t) => [t.name, t.shape]));
  const plans: TensorPlan[] = [];
  const add = (name: string, source: string, permuteHeads?: number) => {
    const shape = hfShape.get(source)!;
    plans.push({
      name,
      dims: [...shape].reverse(),
      // 1-D tensors (norms) stay f32, as llama.cpp's converter keeps them.
      type: shape.length === 1 ? GgmlType.F32 : matrixType,
      source,
      permuteHeads,
      offset: 0,
      bytes: 0,
    });
  };
  add('token_embd.weight', 'model.embed_tokens.weight');
  const ropeFactors = ropeFrequencyFactors(config);
  if (ropeFactors) {
    plans.push({ name: 'rope_freqs.weight', dims: [ropeFactors.length], type: GgmlType.F32, source: ropeFactors, offset: 0, bytes: 0 });
  }
  for (let l = 0; l < config.numLayers; l++) {
    const hf = layerPrefix(l);
    const g = `blk.${l}`;
    add(`${g}.attn_norm.weight`, `${hf}.input_layernorm.weight`);
    add(`${g}.attn_q.weight`, `${hf}.self_attn.q_proj.weight`, config.numHeads);
    add(`${g}.attn_k.weight`, `${hf}.self_attn.k_proj.weight`, config.numKvHeads);
    add(`${g}.attn_v.weight`, `${hf}.self_attn.v_proj.weight`);
    add(`${g}.attn_output.weight`, `${hf}.self_attn.o_proj.weight`);
    add(`${g}.ffn_norm.weight`, `${hf}.post_attention_layernorm.weight`);
    add(`${g}.ffn_gate.weight`, `${hf}.mlp.gate_proj.weight`);
    add(`${g}.ffn_up.weight`, `${hf}.mlp.up_proj.weight`);
    add(`${g}.ffn_down.weight`, `${hf}.mlp.down_proj.weight`);
  }
  add('output_norm.weight', 'model.norm.weight');
  // Without output.weight llama.cpp ties the lm-head to token_embd.
  if (names.has('lm_head.weight')) add('output.weight', 'lm_head.weight');
  return plans;
}

/** Per-frequency divisors of the rotary angle that reproduce the config's rope scaling; null without scaling. */
export function ropeFrequencyFactors(config: LlamaConfig): Float32Array | null {
  if (config.ropeScaling === null) return null;
  const unscaled = ropeInverseFrequencies({ ...config, ropeScaling: null });
  const scaled = ropeInverseFrequencies(config);
  return Float32Array.from(unscaled, (f, i) => f / scaled[i]!);
}

export type Kv = { key: string } & (
  | { type: MetaType.UINT16 | MetaType.UINT32 | MetaType.INT32 | MetaType.FLOAT32; value: number }
  | { type: MetaType.BOOL; value: boolean }
  | { type: MetaType.STRING; value: string }
  | { type: MetaType.ARRAY; itemType: MetaType.STRING; value: string[] }
  | { type: MetaType.ARRAY; itemType: MetaType.INT32; value: Int32Array }
  | { type: MetaType.ARRAY; itemType: MetaType.FLOAT32; value: Float32Array }
);

const u32 = (key: string, value: number): Kv => ({ key, type: MetaType.UINT32, value });
const f32 = (key: string, value: number): Kv => ({ key, type: MetaType.FLOAT32, value });
const str = (key: string, value: string): Kv => ({ key, type: MetaType.STRING, value });
const bool = (key: string, value: boolean): Kv => ({ key, type: MetaType.BOOL, value });

function metadata(config: LlamaConfig, tokenizer: Tokenizer | SentencePieceVocabulary, dtype: GgufDType): Kv[] {
  return [...modelMetadata(config, dtype), ...('scores' in tokenizer ? sentencePieceMetadata(config, tokenizer) : byteLevelMetadata(config, tokenizer))];
}

function modelMetadata(config: LlamaConfig, dtype: GgufDType): Kv[] {
  return [
    str('general.architecture', 'llama'),
    str('general.name', 'sluice export'),
    u32('general.file_type', fileTypeOf[dtype]),
    u32('general.alignment', alignment),
    u32('llama.vocab_size', config.vocabSize),
    u32('llama.context_length', config.maxPositionEmbeddings),
    u32('llama.embedding_length', config.hiddenSize),
    u32('llama.block_count', config.numLayers),
    u32('llama.feed_forward_length', config.intermediateSize),
    u32('llama.attention.head_count', config.numHeads),
    u32('llama.attention.head_count_kv', config.numKvHeads),
    u32('llama.attention.key_length', config.headDim),
    u32('llama.attention.value_length', config.headDim),
    u32('llama.rope.dimension_count', config.headDim),
    f32('llama.rope.freq_base', config.ropeTheta),
    f32('llama.attention.layer_norm_rms_epsilon', config.rmsNormEps),
  ];
}

function sentencePieceMetadata(config: LlamaConfig, v: SentencePieceVocabulary): Kv[] {
  if (v.tokens.length !== config.vocabSize) throw new Error(`${v.tokens.length} pieces for a vocab_size of ${config.vocabSize}`);
  const kvs: Kv[] = [
    str('tokenizer.ggml.model', 'llama'),
    { key: 'tokenizer.ggml.tokens', type: MetaType.ARRAY, itemType: MetaType.STRING, value: v.tokens },
    { key: 'tokenizer.ggml.scores', type: MetaType.ARRAY, itemType: MetaType.FLOAT32, value: v.scores },
    { key: 'tokenizer.ggml.token_type', type: MetaType.ARRAY, itemType: MetaType.INT32, value: v.tokenTypes },
    u32('tokenizer.ggml.bos_token_id', v.bos),
    u32('tokenizer.ggml.eos_token_id', v.eos),
    u32('tokenizer.ggml.unknown_token_id', v.unk),
  ];
  if (v.addSpacePrefix !== undefined) kvs.push(bool('tokenizer.ggml.add_space_prefix', v.addSpacePrefix));
  if (v.addBos !== undefined) kvs.push(bool('tokenizer.ggml.add_bos_token', v.addBos));
  if (v.addEos !== undefined) kvs.push(bool('tokenizer.ggml.add_eos_token', v.addEos));
  return kvs;
}

function byteLevelMetadata(config: LlamaConfig, tokenizer: Tokenizer): Kv[] {
  const { tokens, tokenTypes, merges } = ggufVocab(config, tokenizer);
  const kvs: Kv[] = [
    str('tokenizer.ggml.model', 'gpt2'),
    str('tokenizer.ggml.pre', 'llama-bpe'),
    { key: 'tokenizer.ggml.tokens', type: MetaType.ARRAY, itemType: MetaType.STRING, value: tokens },
    { key: 'tokenizer.ggml.token_type', type: MetaType.ARRAY, itemType: MetaType.INT32, value: tokenTypes },
    { key: 'tokenizer.ggml.merges', type: MetaType.ARRAY, itemType: MetaType.STRING, value: merges },
  ];
  const bos = config.bosTokenId ?? tokenizer.bosTokenId;
  if (bos !== null) {
    kvs.push(u32('tokenizer.ggml.bos_token_id', bos));
    const addsBos = tokenizer.encode('a', true)[0] === bos;
    kvs.push(bool('tokenizer.ggml.add_bos_token', addsBos));
  }
  const eos = config.eosTokenIds[0] ?? tokenizer.eosTokenIds[0];
  if (eos !== undefined) kvs.push(u32('tokenizer.ggml.eos_token_id', eos));
  if (tokenizer.chatTemplateSource !== null) kvs.push(str('tokenizer.chat_template', tokenizer.chatTemplateSource));
  return kvs;
}

/** The vocabulary as llama.cpp's BPE ("gpt2") tokenizer wants it, padded to the model's vocab size. */
function ggufVocab(config: LlamaConfig, tokenizer: Tokenizer): { tokens: string[]; tokenTypes: Int32Array; merges: string[] } {
  const json = tokenizer.json;
  // SentencePiece-style BPE (Llama 2) would need llama.cpp's "llama" tokenizer model and scores.
  if (json.model?.type !== 'BPE' || json.decoder?.type !== 'ByteLevel' || typeof json.model?.vocab !== 'object' || json.model.vocab === null) {
    throw new UserError(
      `GGUF export supports byte-level BPE tokenizers (Llama 3); this tokenizer.json has model ${JSON.stringify(json.model?.type)} and decoder ${JSON.stringify(json.decoder?.type)}`,
    );
  }
  const tokens: (string | undefined)[] = new Array(config.vocabSize);
  const tokenTypes = new Int32Array(config.vocabSize).fill(tokenTypeNormal);
  const place = (token: string, id: number) => {
    if (id >= config.vocabSize) {
      throw new UserError(`tokenizer has token ${JSON.stringify(token)} with id ${id} beyond the model's vocab_size ${config.vocabSize}`);
    }
    tokens[id] = token;
  };
  for (const [token, id] of Object.entries<number>(json.model.vocab)) place(token, id);
  for (const t of (json.added_tokens ?? []) as { id: number; content: string; special?: boolean }[]) {
    place(t.content, t.id);
    tokenTypes[t.id] = t.special ? tokenTypeControl : tokenTypeUserDefined;
  }
  for (let id = 0; id < tokens.length; id++) {
    if (tokens[id] === undefined) {
      tokens[id] = `[PAD${id}]`;
      tokenTypes[id] = tokenTypeUnused;
    }
  }
  const merges = ((json.model.merges ?? []) as (string | [string, string])[]).map((m) => (typeof m === 'string' ? m : m.join(' ')));
  return { tokens: tokens as string[], tokenTypes, merges };
}

function writeKv(w: ByteWriter, kv: Kv): void {
  w.string(kv.key);
  w.u32(kv.type);
  switch (kv.type) {
    case MetaType.UINT16:
      return w.u16(kv.value);
    case MetaType.UINT32:
      return w.u32(kv.value);
    case MetaType.INT32:
      return w.i32(kv.value);
    case MetaType.FLOAT32:
      return w.f32(kv.value);
    case MetaType.BOOL:
      return w.u8(kv.value ? 1 : 0);
    case MetaType.STRING:
      return w.string(kv.value);
    case MetaType.ARRAY:
      w.u32(kv.itemType);
      w.u64(kv.value.length);
      if (kv.itemType === MetaType.STRING) for (const s of kv.value) w.string(s);
      else if (kv.itemType === MetaType.FLOAT32) for (const x of kv.value) w.f32(x);
      else for (const x of kv.value) w.i32(x);
  }
}

/** Streams one tensor: converts (and for Q/K permutes) a block of rows at a time. */
async function writeTensor(
  plan: TensorPlan,
  config: LlamaConfig,
  weights: WeightSource,
  write: (bytes: Uint8Array) => Promise<void>,
): Promise<void> {
  if (typeof plan.source !== 'string') return write(new Uint8Array(plan.source.buffer, plan.source.byteOffset, plan.source.byteLength));
  const info = weights.info(plan.source);
  if (!info) throw new UserError(`${weights.description}: tensor "${plan.source}" is missing`);
  const raw = await weights.read(plan.source);
  const cols = plan.dims[0]!;
  const rows = plan.dims.length === 1 ? 1 : plan.dims[1]!;
  const target = plan.dims.length === 1 ? 'f32' : dtypeOfType(plan.type);
  if (info.dtype === target && plan.permuteHeads === undefined) return write(raw);

  const source = typedView(raw, info.dtype);
  const sourceRow = rowPermutation(rows, plan.permuteHeads, config.headDim);
  const blockRows = Math.max(1, Math.floor((1 << 22) / cols));
  const row = new Float32Array(cols);
  for (let r0 = 0; r0 < rows; r0 += blockRows) {
    const n = Math.min(blockRows, rows - r0);
    if (target === 'f32' || target === 'f16') {
      const block = target === 'f32' ? new Float32Array(n * cols) : new Uint16Array(n * cols);
      for (let r = 0; r < n; r++) convertRow(source, info.dtype, sourceRow(r0 + r) * cols, block, target, r * cols, cols);
      await write(new Uint8Array(block.buffer));
      continue;
    }
    const bytesPerRow = rowBytes(plan.type, cols);
    const block = new Uint8Array(n * bytesPerRow);
    for (let r = 0; r < n; r++) {
      convertRow(source, info.dtype, sourceRow(r0 + r) * cols, row, 'f32', 0, cols);
      if (target === 'bf16') {
        const bits = Uint16Array.from(row, f32ToBf16);
        block.set(new Uint8Array(bits.buffer), r * bytesPerRow);
      } else {
        block.set(quantizeRow(target, row), r * bytesPerRow);
      }
    }
    await write(block);
  }
}

/** GGUF row h*hd + 2i + j holds HF row h*hd + j*hd/2 + i (adjacent rotary pairs instead of halves). */
function rowPermutation(rows: number, heads: number | undefined, headDim: number): (row: number) => number {
  if (heads === undefined) return (row) => row;
  if (rows !== heads * headDim) throw new Error(`rotary permutation: ${rows} rows is not ${heads} heads of ${headDim}`);
  const half = headDim / 2;
  return (row) => {
    const h = Math.floor(row / headDim);
    const within = row % headDim;
    return h * headDim + (within % 2) * half + (within >> 1);
  };
}

function typedView(raw: Uint8Array, dtype: WeightDType): Float32Array | Uint16Array {
  const width = dtype === 'f32' ? 4 : 2;
  const aligned = raw.byteOffset % width === 0 ? raw : raw.slice();
  return dtype === 'f32'
    ? new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4)
    : new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
}

let bf16ToF16Table: Uint16Array | null = null;

/** bf16 bits to f16 bits, round-to-nearest-even, by table (exact for every one of the 65536 inputs). */
function bf16ToF16Bits(): Uint16Array {
  if (bf16ToF16Table === null) {
    bf16ToF16Table = new Uint16Array(65536);
    for (let h = 0; h < 65536; h++) bf16ToF16Table[h] = f32ToF16(bf16ToF32(h));
  }
  return bf16ToF16Table;
}

function convertRow(
  src: Float32Array | Uint16Array,
  srcType: WeightDType,
  from: number,
  dst: Float32Array | Uint16Array,
  dstType: 'f32' | 'f16',
  to: number,
  count: number,
): void {
  if (srcType === dstType) {
    dst.set(src.subarray(from, from + count), to);
  } else if (dstType === 'f16' && srcType === 'bf16') {
    const table = bf16ToF16Bits();
    for (let i = 0; i < count; i++) dst[to + i] = table[src[from + i]!]!;
  } else if (dstType === 'f16') {
    // f32 -> f16
    for (let i = 0; i < count; i++) dst[to + i] = f32ToF16(src[from + i]!);
  } else if (srcType === 'bf16') {
    for (let i = 0; i < count; i++) dst[to + i] = bf16ToF32(src[from + i]!);
  } else {
    const f16 = f16Decoder();
    for (let i = 0; i < count; i++) dst[to + i] = f16[src[from + i]!]!;
  }
}

let f16Table: Float32Array | null = null;

function f16Decoder(): Float32Array {
  if (f16Table === null) f16Table = Float32Array.from({ length: 65536 }, (_, h) => f16ToF32(h));
  return f16Table;
}

function alignUp(n: number): number {
  return Math.ceil(n / alignment) * alignment;
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done, position + done);
    done += bytesWritten;
  }
}

/** A little-endian byte buffer that grows as it is written. */
class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  private length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }

  u16(v: number): void {
    this.reserve(2);
    this.buf.writeUInt16LE(v, this.length);
    this.length += 2;
  }

  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }

  i32(v: number): void {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }

  f32(v: number): void {
    this.reserve(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }

  u64(v: number): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }

  string(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.u64(n);
    this.reserve(n);
    this.buf.write(s, this.length, 'utf8');
    this.length += n;
  }

  padTo(multiple: number): void {
    const pad = (multiple - (this.length % multiple)) % multiple;
    this.reserve(pad);
    this.buf.fill(0, this.length, this.length + pad);
    this.length += pad;
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}
