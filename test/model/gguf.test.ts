import { mkdtempSync, openSync, readSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { afterAll, describe, expect, it } from 'vitest';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { ropeFrequencyFactors, writeGguf } from '../support/gguf-writer.js';
import { presets } from '../../src/model/presets.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { tinyVariant } from '../support/reference-runs.js';

const dir = mkdtempSync(join(tmpdir(), 'sluice-gguf-layout-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function readFloats(file: string, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  const fd = openSync(file, 'r');
  readSync(fd, new Uint8Array(out.buffer), 0, count * 4, offset);
  closeSync(fd);
  return out;
}

describe('GGUF writer', () => {
  it('lays out metadata and tensors as llama.cpp expects, with Q/K rows permuted per head', async () => {
    const config = tinyVariant({ hiddenSize: 16, intermediateSize: 24, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 4, tieWordEmbeddings: false });
    const weights = new DummyWeights(config, 2, 'f32');
    const file = join(dir, 'layout.gguf');
    await writeGguf(file, { config, tokenizer: Tokenizer.llama3(), weights }, { dtype: 'f32' });
    const info = await readGgufFileInfo(file, { logWarnings: false, ignoreKeys: ['tokenizer.ggml.merges'] });
    const meta = info.metadata as any;
    expect(info.version).toBe(3);
    expect(meta.general.architecture).toBe('llama');
    expect(meta.llama).toMatchObject({
      embedding_length: 16,
      block_count: 1,
      feed_forward_length: 24,
      attention: { head_count: 4, head_count_kv: 2 },
      rope: { dimension_count: 4 },
    });
    expect(meta.tokenizer.ggml).toMatchObject({ model: 'gpt2', pre: 'llama-bpe', bos_token_id: 128000, eos_token_id: 128001 });
    expect(meta.tokenizer.ggml.tokens).toHaveLength(config.vocabSize);
    expect(meta.tokenizer.ggml.token_type[128009]).toBe(3);
    expect(meta.tokenizer.ggml.token_type[1000]).toBe(1);

    const tensors = new Map(info.fullTensorInfo!.map((t) => [t.name, t]));
    expect([...tensors.keys()]).toContain('output.weight');
    expect([...tensors.keys()]).toContain('rope_freqs.weight');
    for (const t of tensors.values()) expect(Number(t.fileOffset) % 32).toBe(0);
    expect(tensors.get('token_embd.weight')!.dimensions.map(Number)).toEqual([16, config.vocabSize]);
    expect(tensors.get('blk.0.attn_k.weight')!.dimensions.map(Number)).toEqual([16, 8]);

    // Head h of K: GGUF rows (h*4 + 0, 1, 2, 3) hold HF rows (h*4 + 0, 2, 1, 3).
    const k = new Float32Array((await weights.read('model.layers.0.self_attn.k_proj.weight')).buffer);
    const written = readFloats(file, Number(tensors.get('blk.0.attn_k.weight')!.fileOffset), 8 * 16);
    const hfRowOf = [0, 2, 1, 3, 4, 6, 5, 7];
    for (let row = 0; row < 8; row++) {
      expect(written.subarray(row * 16, row * 16 + 16)).toEqual(k.subarray(hfRowOf[row]! * 16, hfRowOf[row]! * 16 + 16));
    }
    // V is not permuted.
    const v = new Float32Array((await weights.read('model.layers.0.self_attn.v_proj.weight')).buffer);
    expect(readFloats(file, Number(tensors.get('blk.0.attn_v.weight')!.fileOffset), 8 * 16)).toEqual(v);
  });

  it('omits output.weight and rope_freqs.weight when embeddings are tied and rope is unscaled', async () => {
    const config = tinyVariant({ hiddenSize: 8, intermediateSize: 8, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 4, ropeScaling: null });
    const file = join(dir, 'tied.gguf');
    await writeGguf(file, { config, tokenizer: Tokenizer.llama3(), weights: new DummyWeights(config) }, { dtype: 'f16' });
    const info = await readGgufFileInfo(file, { logWarnings: false, ignoreKeys: ['tokenizer.ggml.merges'] });
    const names = info.fullTensorInfo!.map((t) => t.name);
    expect(names).not.toContain('output.weight');
    expect(names).not.toContain('rope_freqs.weight');
    const types = new Map(info.fullTensorInfo!.map((t) => [t.name, t.ggmlType]));
    expect(types.get('token_embd.weight')).toBe(1); // F16
    expect(types.get('output_norm.weight')).toBe(0); // norms stay F32
  });

  it('encodes llama3 rope scaling as per-frequency divisors: 1 for short wavelengths, the factor for long ones', () => {
    const factors = ropeFrequencyFactors(presets['llama-3.1-8b']!)!;
    expect(factors).toHaveLength(64);
    expect(factors[0]).toBe(1);
    expect(factors[63]).toBeCloseTo(8, 5);
    for (let i = 1; i < 64; i++) expect(factors[i]!).toBeGreaterThanOrEqual(factors[i - 1]!);
    expect(ropeFrequencyFactors({ ...presets['llama-3.1-8b']!, ropeScaling: null })).toBeNull();
  });
});
