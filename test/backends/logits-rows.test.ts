import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { create as createCpu } from '../../backends/cpu/index.js';
import type { CpuBackend } from '../../backends/cpu/cpu-backend.js';
import { RefBackend } from '../../backends/ref/ref-backend.js';
import type { Backend, ForwardBatch, SamplingBatch, StepOutput } from '../../src/engine/backend.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { createEngine, generateOne, prompt } from '../support/engine-fixtures.js';
import { HookedBackend } from '../support/hooked-backend.js';
import { pagedBatch, type SequenceStep } from '../support/paged-batch.js';

// Issue 18 item 15: a step's logits are produced only for the rows that need them (sampled
// sequences, asked prompt rows), a bounded number of rows per LM-head run, with the same outputs.

const config = presets.tiny!; // the real 128,256-entry vocabulary: a row of logits is 501 KiB
const vocab = config.vocabSize;
const chunkRows = 7; // 16 sampled rows run as 7, 7, 2; 20 prompt rows as 7, 7, 6
const pageSize = 4;
const numSeqs = 24;

/** 24 fresh sequences of 1-6 tokens; every third is a prefill chunk that does not end its prompt (sampled = 0). */
function mixedStep(logprobs: number, withPromptRows: boolean): ForwardBatch {
  const steps: SequenceStep[] = [];
  let page = 0;
  for (let s = 0; s < numSeqs; s++) {
    const tokens = Array.from({ length: 1 + ((s * 5) % 6) }, (_, i) => 1000 + 37 * s + 11 * i);
    const pages = Array.from({ length: Math.ceil(tokens.length / pageSize) }, () => page++);
    steps.push({ tokens, cached: 0, pages });
  }
  const sampling: SamplingBatch = {
    // Without log-probs every row is greedy (cpu then fetches only its in-graph argmax).
    temperature: Float32Array.from({ length: numSeqs }, (_, s) => (s % 2 && logprobs >= 0 ? 0.8 : 0)),
    topP: new Float32Array(numSeqs).fill(0.95),
    topK: Int32Array.from({ length: numSeqs }, (_, s) => (s % 4 === 1 ? 20 : 0)),
    minP: new Float32Array(numSeqs),
    random: Float32Array.from({ length: numSeqs }, (_, s) => (s * 0.377) % 1),
    logprobs: new Int32Array(numSeqs).fill(logprobs),
    penalties: null,
    sampled: Uint8Array.from({ length: numSeqs }, (_, s) => (s % 3 === 2 ? 0 : 1)),
  };
  const batch = pagedBatch(steps, pageSize, sampling);
  if (withPromptRows) {
    // The next-token log-prob of every prompt token of sequences 0-7 (20 rows): more than one chunk.
    const targets = new Int32Array(batch.tokenIds.length).fill(-1);
    for (let s = 0; s < 8; s++) for (let t = batch.queryStart[s]!; t + 1 < batch.queryStart[s + 1]!; t++) targets[t] = batch.tokenIds[t + 1]!;
    batch.promptLogprobs = { targets, topK: 2 };
  }
  return batch;
}

const sampledRows = Array.from({ length: numSeqs }, (_, s) => s).filter((s) => s % 3 !== 2);

function expectSameSampledRows(chunked: StepOutput, whole: StepOutput): void {
  expect(sampledRows.map((s) => chunked.tokens[s])).toEqual(sampledRows.map((s) => whole.tokens[s]));
  if (whole.logprobs) {
    for (const s of sampledRows) expect(chunked.logprobs![s]).toBeCloseTo(whole.logprobs[s]!, 5);
    const k = whole.topLogprobs!.k;
    for (const s of sampledRows) expect(Array.from(chunked.topLogprobs!.ids.subarray(s * k, (s + 1) * k))).toEqual(Array.from(whole.topLogprobs!.ids.subarray(s * k, (s + 1) * k)));
  }
  if (whole.promptLogprobs) {
    const asked = whole.promptLogprobs.logprobs.filter((x) => !Number.isNaN(x)).length;
    expect(asked).toBe(20);
    expect(Array.from(chunked.promptLogprobs!.ranks)).toEqual(Array.from(whole.promptLogprobs.ranks));
    expect(Array.from(chunked.promptLogprobs!.topIds)).toEqual(Array.from(whole.promptLogprobs.topIds));
    whole.promptLogprobs.logprobs.forEach((x, t) => (Number.isNaN(x) ? expect(chunked.promptLogprobs!.logprobs[t]).toBeNaN() : expect(chunked.promptLogprobs!.logprobs[t]).toBeCloseTo(x, 5)));
  }
}

type Measured = Backend & { maxLogitsRows: number };

async function loaded<B extends Measured>(backend: B): Promise<B> {
  await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 3, 'f32') });
  await backend.allocateKvCache({ numPages: 64, pageSize });
  return backend;
}

const makers: [string, (chunkBytes?: number) => Promise<Measured>][] = [
  ['ref', async (logitsChunkBytes) => new RefBackend({ logitsChunkBytes })],
  ['cpu', async (logitsChunkBytes) => (await createCpu({ threads: 1, cpuWeights: 'f32', logitsChunkBytes })) as CpuBackend],
];

describe.each(makers)('%s: logits only for the rows that need them, a bounded number at a time', (_name, make) => {
  let whole: Measured;
  let chunked: Measured;

  beforeAll(async () => {
    whole = await loaded(await make());
    chunked = await loaded(await make(chunkRows * vocab * 4));
  });

  afterAll(async () => {
    await Promise.all([whole?.close(), chunked?.close()]);
  });

  it('sampled rows with log-probs: same tokens and log-probs; unsampled prefill chunks get no LM-head row', async () => {
    const expected = await whole.forward(mixedStep(3, false));
    // The default chunk holds all 16 sampled rows at once: the 8 unsampled sequences never reached the LM head.
    expect(whole.maxLogitsRows).toBe(sampledRows.length);
    const actual = await chunked.forward(mixedStep(3, false));
    expect(chunked.maxLogitsRows).toBe(chunkRows);
    expectSameSampledRows(actual, expected);
  });

  it('greedy rows without log-probs (cpu: the in-graph argmax), then prompt log-probs over more rows than one chunk', async () => {
    expectSameSampledRows(await chunked.forward(mixedStep(-1, false)), await whole.forward(mixedStep(-1, false)));
    const expected = await whole.forward(mixedStep(1, true));
    const actual = await chunked.forward(mixedStep(1, true));
    expect(chunked.maxLogitsRows).toBe(chunkRows);
    expectSameSampledRows(actual, expected);
  });
});

describe('the engine marks which rows sample', () => {
  it('a prefill chunk that does not end its prompt has sampled = 0, the chunk that ends it and each decode 1', async () => {
    const seen: number[][] = [];
    const engine = await createEngine({ chunkedPrefillSize: 4, disableRadixCache: true }, new HookedBackend(new RefBackend(), (batch) => void seen.push(Array.from(batch.sampling.sampled!))));
    try {
      const ids = prompt('one two three four five six seven eight nine ten');
      expect(ids.length).toBeGreaterThan(8);
      await generateOne(engine, ids, { maxNewTokens: 3, temperature: 0, ignoreEos: true });
      const chunks = Math.ceil(ids.length / 4);
      expect(seen).toEqual([...Array.from({ length: chunks - 1 }, () => [0]), [1], [1], [1]]);
    } finally {
      await engine.close();
    }
  });
});
