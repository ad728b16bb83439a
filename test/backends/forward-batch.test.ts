import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, ForwardBatch } from '../../src/engine/backend.js';
import { createBackend } from '../../backends/index.js';
import { BackendError, UserError } from '../../src/errors.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { greedySampling, pagedBatch } from '../support/paged-batch.js';

const config = presets.tiny!;
const kv = { numPages: 8, pageSize: 4 };

/** A good two-sequence step, and copies of it each broken in one field. */
function good(): ForwardBatch {
  return pagedBatch(
    [
      { tokens: [1, 2, 3], cached: 0, pages: [0] },
      { tokens: [4], cached: 5, pages: [1, 2] },
    ],
    kv.pageSize,
    greedySampling(2),
  );
}

const broken: [string, (b: ForwardBatch) => void, RegExp, typeof UserError | typeof BackendError][] = [
  ['a token outside the vocabulary', (b) => (b.tokenIds[1] = config.vocabSize + 3), new RegExp(`token id ${config.vocabSize + 3} is outside the vocabulary`), UserError],
  ['a KV slot outside the cache', (b) => (b.slotMapping[0] = 99), /ForwardBatch slotMapping: KV slot 99 is outside the cache \(32 slots\)/, BackendError],
  ['a page outside the cache', (b) => (b.pageTable[2] = 8), /ForwardBatch pageTable: page 8 is outside the cache \(8 pages\)/, BackendError],
  ['too few pages for the KV length', (b) => (b.kvLens[1] = 9), /ForwardBatch sequence 1 has 2 pages for a KV length of 9/, BackendError],
  ['a KV length shorter than the new tokens', (b) => (b.kvLens[0] = 2), /ForwardBatch sequence 0 has 3 new tokens and a KV length of 2/, BackendError],
  ['positions of the wrong length', (b) => (b.positions = b.positions.subarray(1)), /ForwardBatch positions and slotMapping must have one entry per token/, BackendError],
  ['queryStart not ending at the token count', (b) => (b.queryStart[2] = 3), /ForwardBatch queryStart must run from 0 to the token count/, BackendError],
];

describe.each(['ref', 'cpu'])('%s backend: one ForwardBatch validation', (name) => {
  let backend: Backend;
  beforeAll(async () => {
    backend = await createBackend(name, { threads: 1, cpuWeights: 'f32' });
    await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 3, 'f32') });
    await backend.allocateKvCache(kv);
  });
  afterAll(async () => {
    await backend?.close();
  });

  it.each(broken)('rejects %s, naming the backend and the field', async (_what, breakIt, message, errorClass) => {
    const batch = good();
    breakIt(batch);
    const step = backend.forward(batch);
    await expect(step).rejects.toThrow(errorClass);
    await expect(step).rejects.toThrow(new RegExp(`^${name}: ${message.source}`));
  });

  it('still runs a good batch afterwards', async () => {
    const out = await backend.forward(good());
    expect(out.tokens.length).toBe(2);
    for (const t of out.tokens) expect(t).toBeLessThan(config.vocabSize);
  });
});
