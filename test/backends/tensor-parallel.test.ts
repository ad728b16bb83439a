import { describe, expect, it } from 'vitest';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import { TensorParallelBackend } from '../../backends/tensor-parallel/tensor-parallel-backend.js';
import type { Backend } from '../../src/engine/backend.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { greedySampling, pagedBatch } from '../support/paged-batch.js';
import { tinyVariant } from '../support/reference-runs.js';
import { SingleSequence } from '../support/single-sequence.js';

const prompt = [5, 17, 250, 3, 999, 42, 7];
const newTokens = 12;

async function loaded(backend: Backend, config: LlamaConfig): Promise<Backend> {
  await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 11) });
  await backend.allocateKvCache({ numPages: 64, pageSize: 1 });
  return backend;
}

async function greedy(backend: Backend) {
  const run = await new SingleSequence(backend, 0).greedy(prompt, newTokens);
  await backend.close();
  return run;
}

// Small vocabularies that split unevenly over 2 and 4 ranks; tied embeddings (the lm-head is the
// vocab-split embedding table) and untied.
const cases: { label: string; config: LlamaConfig }[] = [
  { label: 'heads and KV heads divide evenly (4 heads, 4 KV heads)', config: tinyVariant({ vocabSize: 1001, numKvHeads: 4 }) },
  { label: 'KV heads replicated at tp 4 (4 heads, 2 KV heads), untied lm-head', config: tinyVariant({ vocabSize: 1001, numKvHeads: 2, tieWordEmbeddings: false }) },
  { label: 'one KV head replicated on every rank (MQA)', config: tinyVariant({ vocabSize: 1001, numKvHeads: 1 }) },
];

describe('tensor parallelism on ref ranks equals one rank', () => {
  for (const { label, config } of cases) {
    it(label, async () => {
      const single = await greedy(await loaded(new RefBackend(), config));
      for (const tp of [2, 4]) {
        const sharded = await greedy(await loaded(new TensorParallelBackend('ref', tp), config));
        expect(sharded.tokens, `tp ${tp}`).toEqual(single.tokens);
        sharded.logprobs.forEach((lp, i) => expect(Math.abs(lp - single.logprobs[i]!), `tp ${tp} token ${i}`).toBeLessThan(1e-5));
      }
    });
  }

  it('a batch of sequences, prefill chunks and decodes mixed, with paged KV', async () => {
    const config = cases[1]!.config;
    const steps = [
      { tokens: [1, 2, 3, 4, 5], cached: 0, pages: [3, 0] },
      { tokens: [9], cached: 6, pages: [1, 4] },
      { tokens: [70, 80], cached: 2, pages: [2, 5] },
    ];
    const run = async (backend: Backend) => {
      await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 4) });
      await backend.allocateKvCache({ numPages: 8, pageSize: 4 });
      const out = await backend.forward(pagedBatch(steps, 4, greedySampling(steps.length, 2)));
      await backend.close();
      return out;
    };
    const single = await run(new RefBackend());
    const sharded = await run(new TensorParallelBackend('ref', 4));
    expect([...sharded.tokens]).toEqual([...single.tokens]);
    expect([...sharded.topLogprobs!.ids]).toEqual([...single.topLogprobs!.ids]);
    sharded.logprobs!.forEach((lp, i) => expect(Math.abs(lp - single.logprobs![i]!)).toBeLessThan(1e-5));
  });
});
