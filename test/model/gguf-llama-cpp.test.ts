import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { openModel } from '../../src/model/load.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { writeGguf, type GgufDType } from '../support/gguf-writer.js';
import { refRunner, tinyVariant } from '../support/reference-runs.js';
import { SingleSequence } from '../support/single-sequence.js';

// sluice's GGUF reader against llama.cpp (node-llama-cpp, CPU build) on the same file: the file
// is written from random weights by the test writer, then each side reads it its own way.

const tokenizer = Tokenizer.llama3();
const text =
  'The river town woke slowly: bakers lit their ovens before dawn, fishermen checked nets by lantern light, and the ' +
  'old clock above the market hall struck five, a little late as always. By seven the square was full of carts, ' +
  'children raced between the stalls, and a brass band practiced the same three bars of a march until everyone knew them by heart. ' +
  'At noon the ferry brought travellers from the city: a painter with a folding easel, two students arguing about ' +
  'bridges, a doctor who had come to see her mother, and a small dog that belonged to nobody and followed everyone. ' +
  'In the afternoon the wind turned, clouds gathered over the hills, and the first drops of rain sent the stalls ' +
  'under their awnings while the band packed up its instruments and the children ran home along the river wall.';
const forcedLength = 256;

let llama: Llama;
let dir: string;

beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  dir = mkdtempSync(join(tmpdir(), 'sluice-gguf-read-'));
});

afterAll(async () => {
  await llama?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** llama.cpp's greedy pick after each prefix of `ids` (ids[0..i] for i = 0 .. count-1). */
async function llamaCppPicks(file: string, ids: number[], count: number, free = false): Promise<number[]> {
  const model = await llama.loadModel({ modelPath: file });
  try {
    const context = await model.createContext({
      contextSize: 512,
      threads: 1,
      sequences: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
    });
    const picks: number[] = [];
    const prompt = free ? ids : ids.slice(0, 1);
    const steps = context.getSequence().evaluateWithMetadata(prompt as Token[], {}, { temperature: 0, yieldEogToken: true });
    let step = await steps.next();
    while (!step.done) {
      picks.push(step.value.token);
      if (picks.length === count) break;
      step = await steps.next(free ? undefined : (ids[picks.length] as Token));
    }
    await steps.return();
    await context.dispose();
    return picks;
  } finally {
    await model.dispose();
  }
}

/** The ref backend's greedy pick after each prefix ids[0..i], reading the model through sluice's GGUF loader. */
async function refPicks(file: string, ids: number[], count: number): Promise<number[]> {
  const model = await openModel({ modelPath: file });
  const backend = new RefBackend();
  try {
    await backend.load({ config: model.config, graph: buildLlamaGraph(model.config), weights: model.weights });
    await backend.allocateKvCache({ numPages: count + 1, pageSize: 1 });
    const sequence = new SingleSequence(backend);
    const picks: number[] = [];
    for (let i = 0; i < count; i++) picks.push((await sequence.step([ids[i]!])).tokens[0]!);
    return picks;
  } finally {
    await backend.close();
    await model.weights.close();
  }
}

describe('sluice reads GGUF files as llama.cpp does', () => {
  it('F32: greedy continuations equal llama.cpp token for token (GQA, untied, llama3 rope scaling)', async () => {
    const config = tinyVariant({ numHeads: 6, numKvHeads: 2, tieWordEmbeddings: false });
    const file = join(dir, 'f32.gguf');
    await writeGguf(file, { config, tokenizer, weights: new DummyWeights(config, 11) }, { dtype: 'f32' });
    const model = await openModel({ modelPath: file });
    const prompt = tokenizer.encode('The quick brown fox');
    const ref = await refRunner(model.config, model.weights);
    try {
      const got = await ref.greedy(prompt, 32);
      expect(new Set(got.tokens).size).toBeGreaterThan(4);
      expect(got.tokens).toEqual(await llamaCppPicks(file, prompt, 32, true));
    } finally {
      await ref.close();
    }
  }, 600_000);

  // Quantized files: llama.cpp multiplies with activations quantized to 8 bits, sluice's ref with
  // f32 activations and the same dequantized weights, so near ties may part. Random weights give
  // small margins; at least 90% of 256 teacher-forced positions must agree on the top token.
  const quantized: { dtype: GgufDType; config: LlamaConfig }[] = [
    { dtype: 'q8_0', config: tinyVariant() },
    { dtype: 'q4_0', config: tinyVariant() },
    // K-quant rows are blocks of 256: a hidden size of 256.
    { dtype: 'q4_k', config: tinyVariant({ hiddenSize: 256, intermediateSize: 512, headDim: 64 }) },
    { dtype: 'q6_k', config: tinyVariant({ hiddenSize: 256, intermediateSize: 512, headDim: 64 }) },
    { dtype: 'f16', config: tinyVariant() },
  ];
  it.each(quantized)('$dtype: top-1 agrees with llama.cpp over 256 teacher-forced positions', async ({ dtype, config }) => {
    const file = join(dir, `${dtype}.gguf`);
    await writeGguf(file, { config, tokenizer, weights: new DummyWeights(config, 5) }, { dtype });
    const ids = tokenizer.encode(`${text}\n\n${text}`).slice(0, forcedLength);
    expect(ids).toHaveLength(forcedLength);
    const ours = await refPicks(file, ids, forcedLength);
    const theirs = await llamaCppPicks(file, ids, forcedLength);
    const agree = ours.filter((t, i) => t === theirs[i]).length / forcedLength;
    console.log(`${dtype}: top-1 agreement with llama.cpp ${(agree * 100).toFixed(1)}% of ${forcedLength} positions`);
    expect(agree).toBeGreaterThanOrEqual(0.9);
  }, 600_000);
});
