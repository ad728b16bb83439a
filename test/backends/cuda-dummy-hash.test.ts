import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { f32ToBf16, toFloat32 } from '../../src/model/dtype.js';
import { DummyWeights, dummyValue } from '../../src/model/dummy-weights.js';
import { presets } from '../../src/model/presets.js';
import { expectedTensors } from '../../src/model/weights.js';
import { randomData } from '../support/random-data.js';

/**
 * native/src/dummy_hash.h is the generator the device runs (elementwise.cu's dummyFillKernel).
 * Here its host build is compared bit for bit with src/model/dummy-weights.ts, so the cuda and ref
 * backends load the same random model without a GPU to check it on.
 */
const compiler = ['c++', 'g++', 'clang++'].find((c) => spawnSync(c, ['--version']).status === 0) ?? null;
const seed = Number(process.env.SLUICE_TEST_SEED ?? Date.now() % 1_000_000);
const work = mkdtempSync(join(tmpdir(), 'sluice-dummy-hash-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const f32Bits = (x: number) => ((f32[0] = x), u32[0]!);
const f64 = new Float64Array(1);
const u64 = new BigUint64Array(f64.buffer);
const doubleBits = (x: number) => ((f64[0] = x), u64[0]!.toString(16).padStart(16, '0'));

/** Builds the checker; `flags` lets a test ask for FMA contraction on purpose. */
function build(name: string, flags: string[]): string {
  const out = join(work, name);
  const run = spawnSync(compiler!, ['-std=c++17', '-O2', ...flags, '-Inative/src', 'native/test/dummy_hash_check.cc', '-o', out], { encoding: 'utf8' });
  expect(run.status, run.stderr).toBe(0);
  return out;
}

interface Case {
  key: number;
  index: number;
  halfRange: number;
  offset: number;
}

/** The double before rounding (hex bits), its f32 bits and its bf16 bits, per case. */
function hostValues(binary: string, cases: Case[]): { double: string; f32: number; bf16: number }[] {
  const input = cases.map((c) => `${c.key} ${c.index} ${c.halfRange} ${c.offset}\n`).join('');
  const run = spawnSync(binary, [], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout.trim().split('\n').map((line) => {
    const [d, a, b] = line.split(' ');
    return { double: d!, f32: parseInt(a!, 16), bf16: parseInt(b!, 16) };
  });
}

/** Every tensor recipe of a preset, with indices spread over its size and well past 2^32. */
function casesFor(preset: string, perTensor: number): Case[] {
  const r = randomData(seed);
  const weights = new DummyWeights(presets[preset]!, r.int(0, 1000), 'bf16');
  const cases: Case[] = [];
  for (const t of expectedTensors(presets[preset]!)) {
    const { key, halfRange, offset } = weights.deviceRecipe(t.name);
    const n = t.shape.reduce((a, b) => a * b, 1);
    const indices = [0, 1, n - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 33 + 7, 2 ** 40 + 3, 2 ** 53 - 1];
    for (let i = 0; i < perTensor; i++) indices.push(r.int(0, n - 1), r.int(0, 2 ** 31 - 1) * 2 ** 21 + r.int(0, 2 ** 21 - 1));
    for (const index of indices) cases.push({ key, index, halfRange, offset });
  }
  return cases;
}

describe.skipIf(!compiler)(`dummy weights: native/src/dummy_hash.h against the TypeScript generator (seed ${seed})${compiler ? '' : ' (skipped: no C++ compiler here)'}`, () => {
  it('gives the same double, f32 and bf16 bits for every tensor of tiny and llama-3.1-8b, indices at and above 2^32 included', () => {
    const binary = build('check', []);
    for (const preset of ['tiny', 'llama-3.1-8b']) {
      const cases = casesFor(preset, 40);
      const got = hostValues(binary, cases);
      expect(got.length).toBe(cases.length);
      let mismatches = 0;
      let first = '';
      cases.forEach((c, i) => {
        const value = dummyValue(c.key, c.index, c.halfRange, c.offset);
        const want = { double: doubleBits(value), f32: f32Bits(value), bf16: f32ToBf16(value) };
        if (got[i]!.double !== want.double || got[i]!.f32 !== want.f32 || got[i]!.bf16 !== want.bf16) {
          mismatches++;
          first ||= `key ${c.key} index ${c.index}: host ${JSON.stringify(got[i])}, js ${JSON.stringify(want)}`;
        }
      });
      expect(mismatches, `${preset}: ${mismatches} of ${cases.length} differ; first: ${first}`).toBe(0);
    }
  });

  it('does not change when the compiler is allowed to contract into FMA (-march=native -ffp-contract=fast)', () => {
    const plain = build('plain', []);
    const fused = build('fused', ['-march=native', '-ffp-contract=fast']);
    // Today's recipes (offset 0, or ranges like 0.1 around 1) happen to round the same either way;
    // arbitrary ranges and offsets do not, and are what would expose a fused multiply-add.
    const r = randomData(seed);
    const cases = Array.from({ length: 5000 }, () => ({ key: r.int(0, 2 ** 32 - 1), index: r.int(0, 2 ** 31 - 1) * 2 ** 10 + r.int(0, 1023), halfRange: r.next(), offset: r.next() * 4 }));
    const got = hostValues(fused, cases);
    expect(got).toEqual(hostValues(plain, cases));
    expect(got.map((g) => g.double)).toEqual(cases.map((c) => doubleBits(dummyValue(c.key, c.index, c.halfRange, c.offset))));
  });

  it('matches a whole tensor as DummyWeights.read() returns it to the host backends', async () => {
    const binary = build('check', []);
    const weights = new DummyWeights(presets.tiny!, 3, 'bf16');
    for (const name of ['model.layers.0.input_layernorm.weight', 'model.norm.weight', 'model.layers.1.self_attn.k_proj.weight']) {
      const { key, halfRange, offset } = weights.deviceRecipe(name);
      const want = toFloat32(await weights.read(name), 'bf16');
      const got = hostValues(binary, Array.from(want, (_, index) => ({ key, index, halfRange, offset })));
      const mismatches = got.filter((g, i) => g.bf16 !== f32ToBf16(want[i]!)).length;
      expect(mismatches, name).toBe(0);
    }
  });
});
