import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bytesPerElement } from '../../src/model/dtype.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { presets } from '../../src/model/presets.js';
import { SafetensorsWeights } from '../../src/model/safetensors.js';
import { shardLlama, splitRange } from '../../src/model/shard.js';
import { ShardedWeights } from '../../src/model/sharded-weights.js';
import { expectedTensors, type WeightSource } from '../../src/model/weights.js';
import { writeSafetensorsCheckpoint } from '../support/safetensors-writer.js';
import { tinyVariant } from '../support/reference-runs.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Counts the bytes a source hands out, per tensor. */
class CountingSource implements WeightSource {
  readonly bytesByTensor = new Map<string, number>();
  readonly description: string;
  readonly random: boolean;
  constructor(private readonly inner: WeightSource) {
    this.description = inner.description;
    this.random = inner.random;
  }
  info(name: string) {
    return this.inner.info(name);
  }
  private count(name: string, bytes: Uint8Array): Uint8Array {
    this.bytesByTensor.set(name, (this.bytesByTensor.get(name) ?? 0) + bytes.length);
    return bytes;
  }
  async read(name: string) {
    return this.count(name, await this.inner.read(name));
  }
  async readRange(name: string, offset: number, length: number) {
    return this.count(name, await this.inner.readRange!(name, offset, length));
  }
  get total(): number {
    return [...this.bytesByTensor.values()].reduce((a, b) => a + b, 0);
  }
  async close() {}
}

/** Byte equality without vitest's element-by-element diffing of large arrays. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** The tiny preset with a vocabulary that splits unevenly and compares quickly. */
const small = { vocabSize: 1003, tieWordEmbeddings: false } as const;

describe('the sharding pass', () => {
  it('splits ranges with the remainder on the first parts', () => {
    expect([0, 1, 2].map((i) => splitRange(10, 3, i))).toEqual([
      [0, 4],
      [4, 7],
      [7, 10],
    ]);
  });

  it('rank graphs: heads, KV heads and the MLP split, all_reduce after o/down and the embedding, all_gather before sampling', () => {
    const config = presets['llama-3.1-70b']!;
    const ranks = shardLlama(config, 4);
    for (const r of ranks) {
      expect(r.config.numHeads).toBe(16);
      expect(r.config.numKvHeads).toBe(2);
      expect(r.config.intermediateSize).toBe(7168);
      expect(r.config.vocabSize).toBe(config.vocabSize);
      const kinds = r.graph.ops.map((op) => op.op);
      expect(kinds.filter((k) => k === 'all_reduce')).toHaveLength(1 + 2 * config.numLayers);
      expect(kinds.filter((k) => k === 'all_gather')).toHaveLength(1);
      expect(kinds.indexOf('all_gather')).toBe(kinds.indexOf('sample') - 1);
      expect(r.graph.layerStart).toHaveLength(config.numLayers + 1);
      expect(r.graph.ops[r.graph.layerStart[1]!]).toMatchObject({ op: 'add_rmsnorm', weight: 'model.layers.1.input_layernorm.weight' });
    }
    expect(ranks[3]!.slices.get('model.layers.0.self_attn.k_proj.weight')).toEqual({ dim: 0, start: 6 * 128, end: 8 * 128 });
    expect(ranks[1]!.slices.get('model.layers.5.mlp.down_proj.weight')).toEqual({ dim: 1, start: 7168, end: 14336 });
    expect(ranks[2]!.slices.get('lm_head.weight')).toEqual({ dim: 0, start: 64128, end: 96192 });
  });

  it('replicates KV heads when there are fewer than ranks, each rank holding the head its query heads read', () => {
    const config = tinyVariant(); // 4 heads, 2 KV heads
    const ranks = shardLlama(config, 4);
    const hd = config.headDim;
    expect(ranks.map((r) => r.config.numKvHeads)).toEqual([1, 1, 1, 1]);
    expect(ranks.map((r) => r.slices.get('model.layers.0.self_attn.v_proj.weight')!.start / hd)).toEqual([0, 0, 1, 1]);
    expect(ranks.map((r) => r.slices.get('model.layers.0.self_attn.q_proj.weight')!.start / hd)).toEqual([0, 1, 2, 3]);
  });

  it('refuses head counts that do not split', () => {
    expect(() => shardLlama(tinyVariant(), 3)).toThrow(/4 attention heads do not split evenly over 3 ranks/);
    expect(() => shardLlama(tinyVariant({ numHeads: 12, numKvHeads: 3 }), 2)).toThrow(/3 KV heads/);
  });
});

describe('sharded weight loading', () => {
  async function checkSlices(source: WeightSource, tpSize: number, replicatedKv: boolean) {
    const config = tinyVariant({ ...small, numKvHeads: replicatedKv ? 1 : 4 });
    const ranks = shardLlama(config, tpSize);
    const counters = ranks.map(() => new CountingSource(source));
    const sharded = ranks.map((r, i) => new ShardedWeights(counters[i]!, r.slices, r.rank));
    const size = bytesPerElement[source.info('model.norm.weight')!.dtype];
    for (const t of expectedTensors(config)) {
      const full = await source.read(t.name);
      const parts = await Promise.all(sharded.map((s) => s.read(t.name)));
      const slice = ranks[0]!.slices.get(t.name);
      parts.forEach((p, i) => expect(p.length).toBe(sharded[i]!.info(t.name)!.shape.reduce((a, b) => a * b, 1) * size));
      if (!slice) {
        for (const p of parts) expect(sameBytes(p, full)).toBe(true);
        continue;
      }
      if (slice.dim === 0) {
        const rowBytes = t.shape[1]! * size;
        parts.forEach((p, i) => {
          const { start, end } = ranks[i]!.slices.get(t.name)!;
          expect(sameBytes(p, full.subarray(start * rowBytes, end * rowBytes))).toBe(true);
        });
      } else {
        const [rows, cols] = t.shape as [number, number];
        parts.forEach((p, i) => {
          const { start, end } = ranks[i]!.slices.get(t.name)!;
          for (let r = 0; r < rows; r++) {
            expect(sameBytes(p.subarray(r * (end - start) * size, (r + 1) * (end - start) * size), full.subarray((r * cols + start) * size, (r * cols + end) * size))).toBe(true);
          }
        });
      }
    }
    // Each rank read exactly its own bytes, once; together the ranks read each split tensor once.
    ranks.forEach((r, i) => {
      for (const t of expectedTensors(config)) {
        const expected = sharded[i]!.info(t.name)!.shape.reduce((a, b) => a * b, 1) * size;
        expect(counters[i]!.bytesByTensor.get(t.name)).toBe(expected);
      }
    });
    const fullBytes = (name: string) => source.info(name)!.shape.reduce((a, b) => a * b, 1) * size;
    for (const name of ['model.layers.1.mlp.down_proj.weight', 'model.layers.0.self_attn.q_proj.weight', 'lm_head.weight', 'model.embed_tokens.weight']) {
      expect(counters.reduce((sum, c) => sum + c.bytesByTensor.get(name)!, 0)).toBe(fullBytes(name));
    }
    const kv = 'model.layers.0.self_attn.k_proj.weight';
    expect(counters.reduce((sum, c) => sum + c.bytesByTensor.get(kv)!, 0)).toBe(replicatedKv ? tpSize * fullBytes(kv) : fullBytes(kv));
    const modelBytes = expectedTensors(config).reduce((sum, t) => sum + fullBytes(t.name), 0);
    for (const c of counters) expect(c.total).toBeLessThan(modelBytes / tpSize + modelBytes * 0.1);
  }

  it('dummy weights: each rank generates only its slice', async () => {
    await checkSlices(new DummyWeights(tinyVariant({ ...small, numKvHeads: 4 }), 5), 2, false);
    await checkSlices(new DummyWeights(tinyVariant({ ...small, numKvHeads: 1 }), 5), 4, true);
  });

  it('a safetensors checkpoint: each rank reads only its slice from the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-shard-'));
    dirs.push(dir);
    const config = tinyVariant({ ...small, numKvHeads: 4, dtype: 'bf16' });
    await writeSafetensorsCheckpoint(dir, { config, weights: new DummyWeights(config, 9, 'bf16') }, { dtype: 'bf16', maxShardBytes: 1 << 20 });
    const source = SafetensorsWeights.fromDir(dir)!;
    await checkSlices(source, 4, false);
    await source.close();
  });
});
