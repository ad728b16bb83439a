import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { writeSafetensorsCheckpoint } from '../support/safetensors-writer.js';
import { tinyVariant } from '../support/reference-runs.js';
import { runSluice } from '../support/sluice-process.js';

// Each case breaks one thing in a small checkpoint folder and runs `sluice generate` on it: the
// user must get one line on stderr naming the file and the field or tensor, a non-zero exit
// status and no stack trace.

let root: string;
let good: string;
const config = tinyVariant({ vocabSize: 3, hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 8, dtype: 'f32', bosTokenId: null, eosTokenIds: [] });

/** A three-token BPE tokenizer: loads in milliseconds, unlike the Llama 3 one. */
const tinyTokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: null,
  post_processor: null,
  decoder: null,
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab: { a: 0, b: 1, ab: 2 }, merges: ['a b'] },
};

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'sluice-bad-'));
  const tokenizerDir = join(root, 'tokenizer');
  mkdirSync(tokenizerDir);
  writeFileSync(join(tokenizerDir, 'tokenizer.json'), JSON.stringify(tinyTokenizer));
  writeFileSync(join(tokenizerDir, 'tokenizer_config.json'), '{}');
  good = join(root, 'good');
  await writeSafetensorsCheckpoint(good, { config, weights: new DummyWeights(config, 1) }, { dtype: 'f32', tokenizerDir });
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

/** A copy of the good checkpoint, changed by `breakIt`. */
function broken(name: string, breakIt: (dir: string) => void): string {
  const dir = join(root, name);
  cpSync(good, dir, { recursive: true });
  breakIt(dir);
  return dir;
}

function editJson(file: string, edit: (json: Record<string, unknown>) => void): void {
  const json = JSON.parse(readFileSync(file, 'utf8'));
  edit(json);
  writeFileSync(file, JSON.stringify(json));
}

/** Rewrites the safetensors header text in place (the replacement must keep its length). */
function editHeader(file: string, from: string, to: string): void {
  const bytes = readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = bytes.subarray(8, 8 + length).toString('utf8');
  expect(to.length).toBe(from.length);
  Buffer.from(header.replace(from, to)).copy(bytes, 8);
  writeFileSync(file, bytes);
}

async function expectOneLineError(dir: string, ...mentions: (string | RegExp)[]): Promise<void> {
  const { code, stdout, stderr } = await runSluice(['generate', '--model-path', dir, '--backend', 'ref', '--prompt-ids', '0,1', '--max-new-tokens', '2']);
  expect(code, stderr).not.toBe(0);
  expect(stdout).toBe('');
  const lines = stderr.trimEnd().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(stderr).not.toMatch(/\n\s+at /);
  for (const m of mentions) expect(lines[0]).toMatch(m);
}

describe('sluice generate on bad input', () => {
  it('runs on the intact checkpoint (the cases below differ from it in one thing)', async () => {
    const { code, stdout, stderr } = await runSluice(['generate', '--model-path', good, '--backend', 'ref', '--prompt-ids', '0,1', '--max-new-tokens', '2', '--json']);
    expect(code, stderr).toBe(0);
    expect(JSON.parse(stdout).token_ids).toHaveLength(2);
  });

  it('a model path that does not exist', async () => {
    await expectOneLineError(join(root, 'nowhere'), join(root, 'nowhere'), /does not exist/);
  });

  it('an unsupported architecture', async () => {
    const dir = broken('mistral', (d) => editJson(join(d, 'config.json'), (c) => (c.architectures = ['MistralForCausalLM'])));
    await expectOneLineError(dir, join(dir, 'config.json'), /MistralForCausalLM/);
  });

  it('a config missing a field', async () => {
    const dir = broken('no-hidden-size', (d) => editJson(join(d, 'config.json'), (c) => delete c.hidden_size));
    await expectOneLineError(dir, join(dir, 'config.json'), /"hidden_size"/);
  });

  it('a truncated safetensors file', async () => {
    const dir = broken('truncated', (d) => {
      const file = join(d, 'model.safetensors');
      truncateSync(file, readFileSync(file).length - 10);
    });
    await expectOneLineError(dir, join(dir, 'model.safetensors'), /truncated/, /"model\.norm\.weight"/);
  });

  it('a corrupt header length', async () => {
    const dir = broken('corrupt-length', (d) => {
      const file = join(d, 'model.safetensors');
      const bytes = readFileSync(file);
      bytes.writeBigUInt64LE(1n << 40n, 0);
      writeFileSync(file, bytes);
    });
    await expectOneLineError(dir, join(dir, 'model.safetensors'), /corrupt safetensors header/);
  });

  it('a header that is not JSON', async () => {
    const dir = broken('corrupt-json', (d) => editHeader(join(d, 'model.safetensors'), '{"__metadata__"', '["__metadata__"'));
    await expectOneLineError(dir, join(dir, 'model.safetensors'), /not JSON/);
  });

  it('a tensor of the wrong shape', async () => {
    const dir = broken('wrong-shape', (d) => editJson(join(d, 'config.json'), (c) => (c.intermediate_size = 48)));
    await expectOneLineError(dir, join(dir, 'model.safetensors'), /"model\.layers\.0\.mlp\.gate_proj\.weight"/, /\[32,16\]/, /\[48,16\]/);
  });

  it('a tensor of an unsupported dtype', async () => {
    const dir = broken('int-dtype', (d) => editHeader(join(d, 'model.safetensors'), '"dtype":"F32"', '"dtype":"I32"'));
    await expectOneLineError(dir, join(dir, 'model.safetensors'), /unsupported dtype "I32"/, /tensor "[^"]+"/);
  });
});
