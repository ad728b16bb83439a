import { setTimeout as sleep } from 'node:timers/promises';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { CudaBackend } from '../../backends/cuda/cuda-backend.js';
import { withVariant } from '../../backends/cuda/variants.js';
import { sampleLogits } from '../../backends/shared/host-sampler.js';
import type { ForwardBatch, TokenMaskBatch } from '../../src/engine/backend.js';
import { DummyWeights } from '../../src/model/dummy-weights.js';
import { buildLlamaGraph } from '../../src/model/graph.js';
import { presets } from '../../src/model/presets.js';
import { collect, createEngine, model } from '../support/engine-fixtures.js';
import { greedySampling, pagedBatch } from '../support/paged-batch.js';
import { RecordingCudaAddon, type RecordingAddonOptions } from '../support/recording-cuda-addon.js';
import { maskBatch, maskPlainly } from '../support/token-masks.js';

/**
 * The cuda backend's host side of a constrained step, through a recording stand-in for the addon
 * (no GPU): the forward pass is launched before the masks are ready, and the masks reach sampling
 * once they are. The device side (the same step on the real addon) is in cuda-model.test.ts and
 * test/structured/token-mask.test.ts, skipped without a GPU.
 */
const config = presets.tiny!;
const vocab = config.vocabSize;

async function backendOn(options: RecordingAddonOptions = {}) {
  const addon = new RecordingCudaAddon(options);
  const backend = new CudaBackend(addon, {});
  await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 0, 'bf16') });
  await backend.allocateKvCache({ numPages: 64, pageSize: 1 });
  return { addon, backend };
}

/** Three sequences (a prefill and two decodes); the first and third constrained. */
function threeSequences(): ForwardBatch {
  return pagedBatch(
    [
      { tokens: [5, 6, 7], cached: 0, pages: [0, 1, 2] },
      { tokens: [9], cached: 2, pages: [3, 4, 5] },
      { tokens: [11], cached: 4, pages: [6, 7, 8, 9, 10] },
    ],
    1,
    greedySampling(3, 2),
  );
}

const allowed = [new Set([17, 900, 128000]), null, new Set([5])];

/** Masks that are not computed yet: zero bits until the test fills them and resolves `ready`. */
function pendingMasks(events: string[], shared = false) {
  const filled = maskBatch(allowed, vocab);
  const bits = shared ? new Int32Array(new SharedArrayBuffer(filled.bits.byteLength)) : new Int32Array(filled.bits.length);
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  const mask: TokenMaskBatch = {
    rowOf: filled.rowOf,
    words: filled.words,
    bits,
    get ready() {
      events.push('ready read');
      return done;
    },
  };
  const complete = () => {
    bits.set(filled.bits);
    events.push('masks ready');
    resolve();
  };
  return { mask, complete, want: filled.bits };
}

/** What sampling with the masks must give: the stand-in model's logits, each refused id at -inf. */
function expectedTokens(addon: RecordingCudaAddon, batch: ForwardBatch): number[] {
  const logits = maskPlainly(addon.logits(batch, vocab), vocab, allowed);
  return Array.from(sampleLogits(logits, vocab, { ...batch.sampling, tokenMask: null }).tokens);
}

describe('cuda backend: token masks overlap the forward pass (recording addon, no GPU)', () => {
  it('launches the forward pass before the masks are ready, and samples with them once they are', async () => {
    const { addon, backend } = await backendOn();
    const batch = threeSequences();
    const { mask, complete, want } = pendingMasks(addon.events);
    batch.sampling.tokenMask = mask;
    const step = backend.forward(batch);
    let settled = false;
    void step.then(() => (settled = true));
    await sleep(20);
    // The forward pass was launched and the backend waits for the masks, nothing sampled yet.
    expect(addon.events).toEqual(['launchForward', 'ready read']);
    expect(settled).toBe(false);
    complete();
    const out = await step;
    expect(addon.events).toEqual(['launchForward', 'ready read', 'masks ready', 'sampleLaunched']);
    const sampled = addon.calls.at(-1)!;
    expect(sampled.mask!.rowOf).toEqual([0, -1, 1]);
    expect(Array.from(sampled.mask!.bits)).toEqual(Array.from(want)); // the filled masks, not the zeros of the launch
    expect(Array.from(out.tokens)).toEqual(expectedTokens(addon, batch));
    expect(allowed[0]!.has(out.tokens[0]!)).toBe(true);
    expect(out.tokens[2]).toBe(5);
    expect(out.topLogprobs!.ids[2 * 2]).toBe(5); // the only allowed id is the third row's top alternative
  });

  it('unconstrained steps keep the one-call path: one forward, no launch, no separate sampling', async () => {
    const { addon, backend } = await backendOn();
    const batch = threeSequences();
    const out = await backend.forward(batch);
    expect(addon.calls.map((c) => c.method)).toEqual(['forward']);
    expect(addon.calls[0]!.mask).toBeNull();
    expect(Array.from(out.tokens)).toEqual(Array.from(sampleLogits(addon.logits(batch, vocab), vocab, batch.sampling).tokens));
  });

  it('masks in the mask worker\'s shared memory reach the addon as a plain copy', async () => {
    const { addon, backend } = await backendOn();
    const batch = threeSequences();
    const { mask, complete, want } = pendingMasks(addon.events, true);
    batch.sampling.tokenMask = mask;
    const step = backend.forward(batch);
    await sleep(5);
    complete();
    const out = await step;
    const sampled = addon.calls.at(-1)!;
    expect(sampled.method).toBe('sampleLaunched');
    expect(sampled.mask!.shared).toBe(false);
    expect(Array.from(sampled.mask!.bits)).toEqual(Array.from(want));
    expect(Array.from(out.tokens)).toEqual(expectedTokens(addon, batch));
  });

  it('an addon built before the split waits for the masks, then runs the step in one call with them', async () => {
    const { addon, backend } = await backendOn({ split: false });
    const batch = threeSequences();
    const { mask, complete, want } = pendingMasks(addon.events, true);
    batch.sampling.tokenMask = mask;
    const step = backend.forward(batch);
    await sleep(20);
    expect(addon.events).toEqual(['ready read']);
    complete();
    const out = await step;
    expect(addon.events).toEqual(['ready read', 'masks ready', 'forward']);
    expect(addon.calls[0]!.mask!.shared).toBe(false);
    expect(Array.from(addon.calls[0]!.mask!.bits)).toEqual(Array.from(want));
    expect(Array.from(out.tokens)).toEqual(expectedTokens(addon, batch));
  });

  it('SLUICE_CUDA_MASK_OVERLAP=0 (the path before the overlap, for comparisons) waits for the masks and makes one call', async () => {
    const { addon, backend } = await withVariant({ SLUICE_CUDA_MASK_OVERLAP: '0' }, () => backendOn());
    const batch = threeSequences();
    const { mask, complete } = pendingMasks(addon.events);
    batch.sampling.tokenMask = mask;
    const step = backend.forward(batch);
    await sleep(5);
    complete();
    const out = await step;
    expect(addon.events).toEqual(['ready read', 'masks ready', 'forward']);
    expect(Array.from(out.tokens)).toEqual(expectedTokens(addon, batch));
  });

  it('a failed launch fails the step without waiting for the masks', async () => {
    const { addon, backend } = await backendOn({ failLaunch: 'forward: token id 999999 is outside the vocabulary' });
    const batch = threeSequences();
    batch.sampling.tokenMask = pendingMasks(addon.events).mask; // never completed
    await expect(backend.forward(batch)).rejects.toThrow(/outside the vocabulary/);
    expect(addon.events).toEqual(['launchForward']);
  });

  it('through the engine and its mask worker: each constrained step is launched before its masks are done, and the output follows the schema', async () => {
    const addon = new RecordingCudaAddon({ watchMasks: true });
    const engine = await createEngine({ maskWorker: true }, new CudaBackend(addon, {}));
    const schema = { type: 'object', properties: { city: { enum: ['Paris', 'Oslo'] }, n: { type: 'integer', minimum: 0, maximum: 99 }, note: { type: 'string', maxLength: 12 } }, required: ['city', 'n', 'note'] };
    try {
      const [sample] = await collect(
        engine.generate({
          promptTokenIds: model.tokenizer.encode('JSON:', false),
          params: { maxNewTokens: 80, temperature: 0, grammar: { type: 'json_schema', schema: JSON.stringify(schema), param: 'test' } },
        }),
      );
      expect(sample!.finishReason).toBe('stop');
      const parsed = JSON.parse(sample!.text);
      expect(new Ajv().validate(schema, parsed), sample!.text).toBe(true);
    } finally {
      await engine.close();
    }
    const steps = addon.events.filter((e) => e === 'launchForward').length;
    expect(steps).toBeGreaterThan(0);
    expect(addon.events.filter((e) => e === 'forward')).toEqual([]);
    expect(addon.events).toEqual(Array.from({ length: steps }, () => ['launchForward', 'masks ready', 'sampleLaunched']).flat());
  });
});
