import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, type Llama } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { writeGguf, type GgufDType } from '../../src/model/gguf.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { refRunner, tinyVariant, type GreedyRun } from './reference-runs.js';

// Greedy continuations of random-weight models from the ref backend and from llama.cpp (through
// node-llama-cpp, CPU build) on the same weights written as GGUF.

const steps = 32;
const tokenizer = Tokenizer.llama3();
const longText =
  'In the beginning the Universe was created. This has made a lot of people very angry and been widely regarded as a bad move. ' +
  'Many were increasingly of the opinion that they had all made a big mistake in coming down from the trees in the first place. ' +
  'And some said that even the trees had been a bad move, and that no one should ever have left the oceans.';
const prompts = [
  tokenizer.encode('The quick brown fox'),
  tokenizer.encode('def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n'),
  tokenizer.encode(longText),
];

interface Shape {
  label: string;
  config: LlamaConfig;
  dtype: GgufDType;
  /** Largest allowed |log-prob difference| of a chosen token. */
  tolerance: number;
}

const shapes: Shape[] = [
  // GQA 4/2, tied embeddings, Llama 3.1 rope scaling.
  { label: 'tiny preset (GQA, tied)', config: tinyVariant(), dtype: 'f32', tolerance: 1e-2 },
  // llama3 scaling whose original context (64) the long prompt exceeds, so scaled and smoothed
  // frequencies both matter; q width (6 x 16) differs from the hidden size; untied lm-head.
  {
    label: 'llama3 rope scaling within reach, untied, 6 heads of 16 over hidden 64',
    config: tinyVariant({
      numHeads: 6,
      numKvHeads: 2,
      tieWordEmbeddings: false,
      ropeTheta: 10000,
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    }),
    dtype: 'f32',
    tolerance: 1e-2,
  },
  // Llama 2 style: no rope scaling, multi-head attention (no GQA), three layers.
  {
    label: 'no rope scaling, MHA, 3 layers, untied',
    config: tinyVariant({ numLayers: 3, numKvHeads: 4, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: false }),
    dtype: 'f32',
    tolerance: 1e-2,
  },
  // F16 export (what llama.cpp benchmarks use), from weights already rounded to f16.
  { label: 'tiny preset at F16', config: tinyVariant({ dtype: 'f16' }), dtype: 'f16', tolerance: 5e-2 },
];

let llama: Llama;
let dir: string;

beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  dir = mkdtempSync(join(tmpdir(), 'sluice-gguf-'));
});

afterAll(async () => {
  await llama?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function llamaCppGreedy(file: string, promptIds: number[][], count: number): Promise<GreedyRun[]> {
  const model = await llama.loadModel({ modelPath: file });
  try {
    const runs: GreedyRun[] = [];
    for (const prompt of promptIds) {
      // One thread: on a busy 2-core machine llama.cpp's spinning worker threads made a second
      // thread ten times slower, not faster. An f32 KV cache keeps its numerics close to the ref's.
      const context = await model.createContext({
        contextSize: 512,
        threads: 1,
        sequences: 1,
        experimentalKvCacheKeyType: 'F32',
        experimentalKvCacheValueType: 'F32',
      });
      const run: GreedyRun = { tokens: [], logprobs: [] };
      for await (const out of context.getSequence().evaluateWithMetadata(prompt, { confidence: true }, { temperature: 0 })) {
        run.tokens.push(out.token);
        run.logprobs.push(Math.log(out.confidence));
        if (run.tokens.length === count) break;
      }
      await context.dispose();
      runs.push(run);
    }
    return runs;
  } finally {
    await model.dispose();
  }
}

describe('ref backend agrees with llama.cpp on the same random weights', () => {
  it.each(shapes)('$label', async ({ config, dtype, tolerance }) => {
    const weights = new DummyWeights(config, 7);
    const file = join(dir, `model-${dtype}.gguf`);
    await writeGguf(file, { config, tokenizer, weights }, { dtype });
    const expected = await llamaCppGreedy(file, prompts, steps);

    const ref = await refRunner(config, weights);
    try {
      for (let p = 0; p < prompts.length; p++) {
        const got = await ref.greedy(prompts[p]!, steps);
        // Random models that fall into a one-token loop would make this comparison weak.
        expect(new Set(got.tokens).size).toBeGreaterThan(4);
        expect(got.tokens, `prompt ${p}`).toEqual(expected[p]!.tokens);
        const worst = Math.max(...got.logprobs.map((lp, i) => Math.abs(lp - expected[p]!.logprobs[i]!)));
        expect(worst, `prompt ${p}: largest log-prob difference`).toBeLessThan(tolerance);
      }
    } finally {
      await ref.close();
    }
  });
});
