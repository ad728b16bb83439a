import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { writeGguf } from '../support/gguf-writer.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { refRunner, tinyVariant, type GreedyRun } from '../support/reference-runs.js';

// Greedy continuations of random-weight models from the ref backend and from llama.cpp (through
// node-llama-cpp, CPU build) on the same weights written as GGUF.

const steps = 32;
const tokenizer = Tokenizer.llama3();
// Long enough (~90 tokens) that llama3 scaling with a short original context changes the output.
const longText =
  'The river town woke slowly: bakers lit their ovens before dawn, fishermen checked nets by lantern light, and the ' +
  'old clock above the market hall struck five, a little late as always. By seven the square was full of carts, ' +
  'children raced between the stalls, and a brass band practiced the same three bars of a march until everyone knew them by heart.';
const prompts = [
  tokenizer.encode('The quick brown fox'),
  tokenizer.encode('def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n'),
  tokenizer.encode(longText),
];

interface Shape {
  label: string;
  config: LlamaConfig;
  /** Largest allowed |log-prob difference| of a chosen token. */
  tolerance: number;
}

const shapes: Shape[] = [
  // GQA 4/2, tied embeddings, Llama 3.1 rope scaling.
  { label: 'tiny preset (GQA, tied)', config: tinyVariant(), tolerance: 5e-3 },
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
    tolerance: 5e-3,
  },
  // Llama 2 style: no rope scaling, multi-head attention (no GQA), three layers.
  {
    label: 'no rope scaling, MHA, 3 layers, untied',
    config: tinyVariant({ numLayers: 3, numKvHeads: 4, ropeTheta: 10000, ropeScaling: null, tieWordEmbeddings: false }),
    tolerance: 5e-3,
  },
];

let llama: Llama;
let dir: string;

beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  dir = mkdtempSync(join(tmpdir(), 'sluice-gguf-'));
});

afterAll(async () => {
  await llama?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface LlamaCppRun extends GreedyRun {
  /** With teacher forcing: llama.cpp's log-prob of each forced token (-Infinity when it gives the token no probability). */
  forcedLogprobs: number[];
}

/**
 * Greedy decoding in llama.cpp. With `forced`, the tokens fed back are forced[p] instead of
 * llama.cpp's own picks (teacher forcing), so each step is compared on the same prefix.
 */
async function llamaCpp(file: string, promptIds: number[][], count: number, forced?: number[][]): Promise<LlamaCppRun[]> {
  const model = await llama.loadModel({ modelPath: file });
  try {
    const runs: LlamaCppRun[] = [];
    for (let p = 0; p < promptIds.length; p++) {
      // One thread: on a busy 2-core machine llama.cpp's spinning worker threads made a second
      // thread ten times slower, not faster. Flash attention off and an f32 KV cache keep
      // llama.cpp's numerics close to the ref's (its CPU flash attention rounds to f16: ~1e-2).
      const context = await model.createContext({
        contextSize: 512,
        threads: 1,
        sequences: 1,
        flashAttention: false,
        experimentalKvCacheKeyType: 'F32',
        experimentalKvCacheValueType: 'F32',
      });
      const run: LlamaCppRun = { tokens: [], logprobs: [], forcedLogprobs: [] };
      const steps = context
        .getSequence()
        .evaluateWithMetadata(promptIds[p]! as Token[], { confidence: true, probabilities: forced !== undefined }, { temperature: 0, yieldEogToken: true });
      let step = await steps.next();
      while (!step.done) {
        const next = forced?.[p]![run.tokens.length] as Token | undefined;
        run.tokens.push(step.value.token);
        run.logprobs.push(Math.log(step.value.confidence));
        if (next !== undefined) {
          const probabilities = (step.value as { probabilities?: Map<Token, number> }).probabilities;
          run.forcedLogprobs.push(Math.log(probabilities?.get(next) ?? 0));
        }
        if (run.tokens.length === count) break;
        step = await steps.next(next);
      }
      await steps.return();
      await context.dispose();
      runs.push(run);
    }
    return runs;
  } finally {
    await model.dispose();
  }
}

describe('ref backend agrees with llama.cpp on the same random weights', () => {
  it.each(shapes)('$label', async ({ config, tolerance }) => {
    const weights = new DummyWeights(config, 7);
    const file = join(dir, 'model-f32.gguf');
    await writeGguf(file, { config, tokenizer, weights }, { dtype: 'f32' });
    const expected = await llamaCpp(file, prompts, steps);

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

  // F16 export, as llama.cpp benchmarks use it. llama.cpp rounds activations to f16 inside its
  // matmuls, so free-running greedy paths may part at a near tie; instead it follows the ref's
  // path (teacher forcing) and must agree at every step except where two tokens nearly tie.
  it('F16 export: llama.cpp agrees step by step along the ref greedy path', async () => {
    const config = tinyVariant({ dtype: 'f16' });
    const weights = new DummyWeights(config, 7, 'f16');
    const file = join(dir, 'model-f16.gguf');
    await writeGguf(file, { config, tokenizer, weights }, { dtype: 'f16' });
    // The short and the long prompt: llama.cpp's full probability lists make each step slow.
    const f16Prompts = [prompts[0]!, prompts[2]!];
    const ref = await refRunner(config, weights);
    const expected: GreedyRun[] = [];
    try {
      for (const prompt of f16Prompts) expected.push(await ref.greedy(prompt, steps));
    } finally {
      await ref.close();
    }
    const got = await llamaCpp(file, f16Prompts, steps, expected.map((r) => r.tokens));
    let disagreements = 0;
    for (let p = 0; p < f16Prompts.length; p++) {
      for (let i = 0; i < steps; i++) {
        const refLogprob = expected[p]!.logprobs[i]!;
        expect(Math.abs(got[p]!.forcedLogprobs[i]! - refLogprob), `prompt ${p} step ${i}`).toBeLessThan(5e-2);
        if (got[p]!.tokens[i] !== expected[p]!.tokens[i]) {
          disagreements++;
          expect(got[p]!.logprobs[i]! - got[p]!.forcedLogprobs[i]!, `prompt ${p} step ${i}: not a near tie`).toBeLessThan(0.1);
        }
      }
    }
    expect(disagreements).toBeLessThan(3);
  });
});
