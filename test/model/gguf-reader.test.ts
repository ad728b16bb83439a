import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f16ToF32, f32ToF16, toFloat32 } from '../../src/model/dtype.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { dequantize } from '../../src/model/gguf/dequantize.js';
import { loadGguf } from '../../src/model/gguf/load-gguf.js';
import { openModel } from '../../src/model/load.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { expectedTensors } from '../../src/model/weights.js';
import { UserError } from '../../src/errors.js';
import { quantBlock, quantizeRow, type QuantType } from '../support/ggml-quantize.js';
import { MetaType, writeGguf, type GgufDType } from '../support/gguf-writer.js';
import { randomData } from '../support/random-data.js';
import { tinyVariant } from '../support/reference-runs.js';

const tokenizer = Tokenizer.llama3();
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-gguf-reader-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Random bytes for whole blocks, with finite f16 scales where the format keeps them. */
function randomBlocks(type: QuantType, blocks: number, seed: number): Uint8Array {
  const r = randomData(seed);
  const { bytes } = quantBlock[type];
  const out = Uint8Array.from({ length: blocks * bytes }, () => r.int(0, 255));
  const view = new DataView(out.buffer);
  const scale = (at: number) => view.setUint16(at, f32ToF16((r.next() - 0.5) * 0.02), true);
  for (let b = 0; b < blocks; b++) {
    const at = b * bytes;
    if (type === 'q8_0' || type === 'q4_0') scale(at);
    if (type === 'q4_k') (scale(at), scale(at + 2));
    if (type === 'q6_k') scale(at + 208);
  }
  return out;
}

/**
 * One element of a block read straight from the format's description (ggml-common.h), element
 * by element: the reference the loop-based dequantizer must equal.
 */
function plainElement(type: QuantType, b: Uint8Array, e: number): number {
  const half = (at: number) => f16ToF32(b[at]! | (b[at + 1]! << 8));
  const int8 = (v: number) => (v > 127 ? v - 256 : v);
  const f = Math.fround;
  switch (type) {
    case 'q8_0':
      return f(half(0) * int8(b[2 + e]!));
    case 'q4_0': {
      const byte = b[2 + (e % 16)]!;
      const q = e < 16 ? byte & 15 : byte >> 4;
      return f((q - 8) * half(0));
    }
    case 'q4_k': {
      const sub = e >> 5;
      const byte = b[16 + 32 * (sub >> 1) + (e & 31)]!;
      const q = sub % 2 === 0 ? byte & 15 : byte >> 4;
      // Scales and mins: 6 bits each; sub-blocks 4-7 keep their low 4 bits in bytes 8-11 and their top 2 bits in the top of bytes 0-7.
      const s = (i: number) => b[4 + i]!;
      const scale = sub < 4 ? s(sub) & 63 : (s(sub + 4) & 15) | ((s(sub - 4) >> 6) << 4);
      const min = sub < 4 ? s(sub + 4) & 63 : (s(sub + 4) >> 4) | ((s(sub) >> 6) << 4);
      return f(f(f(half(0) * scale) * q) - f(half(2) * min));
    }
    case 'q6_k': {
      const n = e >> 7;
      const quarter = (e & 127) >> 5;
      const l = e & 31;
      const low = (b[64 * n + l + 32 * (quarter & 1)]! >> (4 * (quarter >> 1))) & 15;
      const high = (b[128 + 32 * n + l]! >> (2 * quarter)) & 3;
      const scale = int8(b[192 + (e >> 4)]!);
      return f(f(half(208) * scale) * ((low | (high << 4)) - 32));
    }
  }
}

describe('GGUF dequantization', () => {
  it.each(['q8_0', 'q4_0', 'q4_k', 'q6_k'] as const)('%s: every element of random blocks equals a plain reading of the format', (type) => {
    const { size, bytes } = quantBlock[type];
    const blocks = 6;
    const raw = randomBlocks(type, blocks, 3);
    const out = new Float32Array(blocks * size);
    dequantize(type.toUpperCase() as 'Q8_0', raw, out);
    const plain = new Float32Array(out.length);
    for (let b = 0; b < blocks; b++) {
      const block = raw.subarray(b * bytes, (b + 1) * bytes);
      for (let e = 0; e < size; e++) plain[b * size + e] = plainElement(type, block, e);
    }
    expect(Array.from(out)).toEqual(Array.from(plain));
    expect(new Set(out).size).toBeGreaterThan(size / 4);
  });

  it.each([
    ['q8_0', 1 / 254],
    ['q4_0', 1 / 8],
    ['q4_k', 1 / 15],
    ['q6_k', 1 / 62],
  ] as const)('%s: the test writer quantizes and the reader decodes within half a quantization step', (type, step) => {
    const x = randomData(9).uniform(1024, 0.5);
    const out = new Float32Array(x.length);
    dequantize(type.toUpperCase() as 'Q8_0', quantizeRow(type, x), out);
    const { size } = quantBlock[type];
    for (let b = 0; b < x.length / size; b++) {
      const block = x.subarray(b * size, (b + 1) * size);
      const range = Math.max(...Array.from(block, Math.abs)) * 2;
      let worst = 0;
      for (let i = b * size; i < (b + 1) * size; i++) worst = Math.max(worst, Math.abs(out[i]! - x[i]!));
      expect(worst, `block ${b}`).toBeLessThanOrEqual(range * step * 1.1 + 1e-3);
    }
  });
});

describe('GGUF reader', () => {
  const config = tinyVariant({ numHeads: 4, numKvHeads: 2, tieWordEmbeddings: false });
  const weights = new DummyWeights(config, 4, 'f32');

  it('reads back the config, the Llama 3 tokenizer and (F32) every tensor exactly, Q/K rows un-permuted', async () => {
    const file = join(dir, 'f32.gguf');
    await writeGguf(file, { config, tokenizer, weights }, { dtype: 'f32' });
    const model = await openModel({ modelPath: file });
    const c = model.config;
    expect({ ...c, ropeScaling: null, rmsNormEps: 0 }).toEqual({ ...config, ropeScaling: null, rmsNormEps: 0, eosTokenIds: [config.eosTokenIds[0]] });
    expect(c.rmsNormEps).toBeCloseTo(config.rmsNormEps, 10);
    expect(c.ropeScaling?.type).toBe('frequency-factors');
    const want = ropeInverseFrequencies(config);
    ropeInverseFrequencies(c).forEach((f, i) => expect(Math.abs(f - want[i]!) / want[i]!).toBeLessThan(1e-6));
    for (const t of expectedTensors(config)) {
      expect(model.weights.info(t.name)).toEqual({ name: t.name, dtype: 'f32', shape: t.shape });
      expect(sameBytes(await model.weights.read(t.name), await weights.read(t.name)), t.name).toBe(true);
    }
    for (const s of ['Hello world', ' déjà vu 123\n\tx', '<|begin_of_text|>hi<|eot_id|>']) {
      expect(model.tokenizer.encode(s)).toEqual(tokenizer.encode(s));
    }
    expect(model.tokenizer.chatTemplateSource).toBe(tokenizer.chatTemplateSource);
    expect(model.tokenizer.decode(tokenizer.encode('naïve café'))).toBe('naïve café');
    expect(model.stopTokenIds).toContain(config.eosTokenIds[0]);
    await model.weights.close();
  });

  it.each(['f16', 'bf16', 'q8_0'] as GgufDType[])('%s: matrices decode to within the format precision; norms stay exact', async (dtype) => {
    const file = join(dir, `${dtype}.gguf`);
    await writeGguf(file, { config, tokenizer, weights }, { dtype });
    const { config: c, weights: w } = await loadGguf(file);
    expect(c.dtype).toBe(dtype === 'q8_0' ? 'f32' : dtype);
    for (const t of expectedTensors(config)) {
      const a = toFloat32(await weights.read(t.name), 'f32');
      const b = toFloat32(await w.read(t.name), w.info(t.name)!.dtype);
      const largest = a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const tolerance = t.shape.length === 1 ? 0 : largest * (dtype === 'bf16' ? 2 ** -8 : 2 ** -7);
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      expect(worst, t.name).toBeLessThanOrEqual(tolerance);
    }
    await w.close();
  });

  it('Q8_0 and Q4_0 blocks are handed over as stored, in Hugging Face row order; bf16 on request', async () => {
    const file = join(dir, 'q4_0.gguf');
    await writeGguf(file, { config, tokenizer, weights }, { dtype: 'q4_0' });
    const { weights: w } = await loadGguf(file, { dequantizeTo: 'bf16' });
    const name = 'model.layers.0.self_attn.k_proj.weight';
    expect(w.info(name)!.dtype).toBe('bf16');
    const blocks = (await w.storedBlocks(name))!;
    expect(blocks.type).toBe('Q4_0');
    expect(blocks.shape).toEqual([config.numKvHeads * config.headDim, config.hiddenSize]);
    // Row by row, the blocks are the writer's quantization of the HF row.
    const hf = toFloat32(await weights.read(name), 'f32');
    const h = config.hiddenSize;
    const rowBytes = (h / 32) * 18;
    for (let r = 0; r < blocks.shape[0]; r++) {
      expect(sameBytes(blocks.bytes.subarray(r * rowBytes, (r + 1) * rowBytes), quantizeRow('q4_0', hf.subarray(r * h, (r + 1) * h))), `row ${r}`).toBe(true);
    }
    expect(await w.storedBlocks('model.norm.weight')).toBeNull();
    await w.close();
  });

  it('a split GGUF (first shard, or its folder) reads as the single file does', async () => {
    const folder = join(dir, 'split');
    mkdirSync(folder);
    const files = await writeGguf(join(folder, 'm.gguf'), { config, tokenizer, weights }, { dtype: 'f32', split: 3 });
    expect(files.map((f) => basename(f))).toEqual(['m-00001-of-00003.gguf', 'm-00002-of-00003.gguf', 'm-00003-of-00003.gguf']);
    for (const modelPath of [files[0]!, folder]) {
      const model = await openModel({ modelPath });
      expect(model.path).toBe(files[0]);
      for (const t of expectedTensors(config)) expect(sameBytes(await model.weights.read(t.name), await weights.read(t.name)), t.name).toBe(true);
      await model.weights.close();
    }
    rmSync(files[2]!);
    await expect(openModel({ modelPath: files[0] })).rejects.toThrow(`${files[2]}: shard of the split GGUF m-00001-of-00003.gguf not found`);
  });
});

describe('bad GGUF files: one line naming the file and the problem', () => {
  const config = tinyVariant();
  const weights = new DummyWeights(config, 1, 'f32');

  async function failure(file: string): Promise<string> {
    try {
      await openModel({ modelPath: file });
    } catch (e) {
      expect(e).toBeInstanceOf(UserError);
      const message = (e as Error).message;
      expect(message).not.toContain('\n');
      expect(message.startsWith(file)).toBe(true);
      return message;
    }
    throw new Error(`${file} loaded`);
  }

  it('truncated data', async () => {
    const file = join(dir, 'truncated.gguf');
    await writeGguf(file, { config, tokenizer, weights }, { dtype: 'f32' });
    const size = readFileSync(file).byteLength;
    truncateSync(file, size - 1000);
    expect(await failure(file)).toMatch(/truncated: tensor "[\w.]+" ends at byte \d+ but the file has \d+ bytes/);
  });

  it('truncated header', async () => {
    const file = join(dir, 'truncated-header.gguf');
    await writeGguf(file, { config, tokenizer, weights }, { dtype: 'f32' });
    truncateSync(file, 5000);
    expect(await failure(file)).toMatch(/truncated: the header runs past the end of the file \(5000 bytes\)/);
  });

  it('not GGUF at all', async () => {
    const file = join(dir, 'text.gguf');
    writeFileSync(file, 'hello, this is not a model');
    expect(await failure(file)).toMatch(/not a readable GGUF file/);
  });

  it('unsupported tensor type', async () => {
    const file = join(dir, 'q5k.gguf');
    await writeGguf(file, { config, tokenizer, weights }, { dtype: 'f32' });
    setTensorType(file, 'blk.1.ffn_up.weight', 13);
    expect(await failure(file)).toMatch(/tensor "blk.1.ffn_up.weight" has GGML type Q5_K, which sluice does not read \(F32, F16, Q4_0, Q8_0, Q4_K, Q6_K, BF16\)/);
  });

  it('unsupported architecture', async () => {
    const file = join(dir, 'qwen.gguf');
    await writeGguf(file, { config, tokenizer, weights }, {
      dtype: 'f32',
      editMetadata: (kvs) => kvs.map((kv) => (kv.key === 'general.architecture' && kv.type === MetaType.STRING ? { ...kv, value: 'qwen2' } : kv)),
    });
    expect(await failure(file)).toMatch(/unsupported architecture "qwen2"/);
  });

  it('a tokenizer that does not match the vocabulary size', async () => {
    const file = join(dir, 'short-vocab.gguf');
    await writeGguf(file, { config, tokenizer, weights }, {
      dtype: 'f32',
      editMetadata: (kvs) =>
        kvs.map((kv) =>
          kv.key === 'tokenizer.ggml.tokens' && kv.type === MetaType.ARRAY && kv.itemType === MetaType.STRING
            ? { ...kv, value: kv.value.slice(0, 128000) }
            : kv.key === 'tokenizer.ggml.token_type' && kv.type === MetaType.ARRAY && kv.itemType === MetaType.INT32
              ? { ...kv, value: kv.value.slice(0, 128000) }
              : kv,
        ),
    });
    expect(await failure(file)).toMatch(/the tokenizer has 128000 tokens but the model's vocabulary \(token_embd.weight\) has 128256 rows/);
  });
});

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Rewrites one tensor's GGML type id in a GGUF header (found by its name string). */
function setTensorType(file: string, tensor: string, type: number): void {
  const bytes = readFileSync(file);
  const name = Buffer.from(tensor, 'utf8');
  const lengthPrefix = Buffer.alloc(8);
  lengthPrefix.writeBigUInt64LE(BigInt(name.length));
  const at = bytes.indexOf(Buffer.concat([lengthPrefix, name]));
  if (at < 0) throw new Error(`${tensor} not in ${file}`);
  const dimsAt = at + 8 + name.length;
  const nDims = bytes.readUInt32LE(dimsAt);
  const typeAt = dimsAt + 4 + 8 * nDims;
  bytes.writeUInt32LE(type, typeAt);
  writeFileSync(file, bytes);
}
