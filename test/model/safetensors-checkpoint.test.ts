import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { toFloat32 } from '../../src/model/dtype.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { loadModel } from '../../src/model/load.js';
import { readSafetensorsHeader } from '../../src/model/safetensors.js';
import { writeSafetensorsCheckpoint } from '../support/safetensors-writer.js';
import { expectedTensors } from '../../src/model/weights.js';
import { refRunner, tinyVariant } from '../support/reference-runs.js';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-ckpt-'));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('safetensors checkpoints written and read back', () => {
  it('a sharded BF16 checkpoint gives the same greedy tokens as its F32 twin', async () => {
    // Untied, so lm_head.weight is a tensor of its own; weights drawn in bf16 so the F32 twin
    // holds exactly the same values.
    const config = tinyVariant({ tieWordEmbeddings: false, dtype: 'bf16' });
    const source = new DummyWeights(config, 3, 'bf16');
    const bf16Dir = tempDir();
    const f32Dir = tempDir();
    const shards = await writeSafetensorsCheckpoint(bf16Dir, { config, weights: source }, { dtype: 'bf16', maxShardBytes: 4 << 20 });
    expect(shards.length).toBeGreaterThan(2);
    expect(readdirSync(bf16Dir)).toContain('model.safetensors.index.json');
    expect(readdirSync(bf16Dir)).toContain('tokenizer.json');
    await writeSafetensorsCheckpoint(f32Dir, { config, weights: source }, { dtype: 'f32' });
    expect(readdirSync(f32Dir)).toContain('model.safetensors');

    const bf16 = loadModel({ modelPath: bf16Dir });
    const f32 = loadModel({ modelPath: f32Dir });
    expect(bf16.config.dtype).toBe('bf16');
    expect(f32.config.dtype).toBe('f32');
    expect(bf16.weights.info('lm_head.weight')).toEqual({ name: 'lm_head.weight', dtype: 'bf16', shape: [config.vocabSize, config.hiddenSize] });

    const prompt = bf16.tokenizer.encode('Sharded checkpoints must read back exactly.');
    const runs = [];
    for (const model of [bf16, f32]) {
      const ref = await refRunner(model.config, model.weights);
      runs.push(await ref.greedy(prompt, 16));
      await ref.close();
      await model.weights.close();
    }
    expect(new Set(runs[0]!.tokens).size).toBeGreaterThan(4);
    expect(runs[0]!.tokens).toEqual(runs[1]!.tokens);
    expect(runs[0]!.logprobs).toEqual(runs[1]!.logprobs);
  });

  it('stores every tensor with its shape and the source values, 8-byte aligned', async () => {
    const config = tinyVariant({ numLayers: 1 });
    const source = new DummyWeights(config, 5, 'f32');
    const dir = tempDir();
    const [file] = await writeSafetensorsCheckpoint(dir, { config, weights: source }, { dtype: 'bf16' });
    const headerLength = Number(readFileSync(file!).readBigUInt64LE(0));
    expect((8 + headerLength) % 8).toBe(0);
    const entries = readSafetensorsHeader(file!);
    expect(entries.map((e) => [e.name, e.shape])).toEqual(expectedTensors(config).map((t) => [t.name, t.shape]));

    const written = loadModel({ modelPath: dir });
    for (const name of ['model.layers.0.self_attn.k_proj.weight', 'model.norm.weight']) {
      const got = toFloat32(await written.weights.read(name), 'bf16');
      const want = toFloat32(await source.read(name), 'f32');
      // bf16 keeps 8 significant bits: each value within half a unit in the last place.
      for (let i = 0; i < want.length; i += 7) {
        expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(Math.abs(want[i]!) * 2 ** -8);
      }
    }
    await written.weights.close();
  });
});
