import { describe, expect, it } from 'vitest';
import type { ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import { LlmEngine } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/options.js';
import type { GenerateDelta, SamplingParams } from '../../src/engine/types.js';
import { Rng } from '../../src/model/rng.js';
import { collect, model, quiet, type Sample } from '../support/engine-fixtures.js';
import { HashBackend, hashModelOutput } from '../support/hash-backend.js';

/**
 * Whole-step overlap (SGLang's overlap scheduler): with a backend that takes in-flight token ids
 * (`overlapsSteps`), the engine launches step N+1 before it has step N's tokens. The hash model
 * computes each token from the KV the sequence attends to, so a wrong input token, a page freed
 * too early or a discarded token that leaked into the output all change what comes out.
 */

/** The hash model, counting its forward calls. */
class CountingHashBackend extends HashBackend {
  calls = 0;
  override forward(batch: ForwardBatch): Promise<StepOutput> {
    this.calls++;
    return super.forward(batch);
  }
}

async function hashEngine(overlap: boolean, options: Partial<EngineOptions> = {}) {
  const backend = new CountingHashBackend({ overlapsSteps: true });
  const engine = await LlmEngine.create(model, backend, { maxTotalTokens: 8192, logger: quiet, disableOverlapSchedule: !overlap, ...options });
  return { engine, backend };
}

async function expectKvFree(engine: LlmEngine, pageSize = 1): Promise<void> {
  const stats = engine.stats();
  expect(stats.error).toBeNull();
  expect(stats.runningRequests + stats.waitingRequests).toBe(0);
  expect(stats.kvPagesUsed).toBe(0);
  expect(stats.kvPagesCached * pageSize).toBe(stats.prefixCacheTokens);
  expect(engine.flushCache()).toBe(true);
  expect(engine.stats().kvPagesFree).toBe(engine.stats().kvPagesTotal);
}

/** A prompt and a token index whose token does not occur earlier in the hash model's output (so it is where a stop id ends it). */
function promptWithStop(seed: number, length: number, at: number): { promptIds: number[]; expected: number[]; stopId: number } {
  for (let attempt = 0; ; attempt++) {
    const rng = new Rng(seed * 1000 + attempt);
    const promptIds = Array.from({ length }, () => 1000 + Math.floor(rng.next() * 5000));
    const expected = hashModelOutput(promptIds, 40);
    if (expected.indexOf(expected[at]!) === at) return { promptIds, expected, stopId: expected[at]! };
  }
}

interface MixRequest {
  id: string;
  promptIds: number[];
  params: Partial<SamplingParams>;
}

/** A seeded mix: shared prefixes, n > 1, stop ids, stop strings, log-probs, max_tokens from 1 to 40. */
function requestMix(seed: number, count: number): MixRequest[] {
  const rng = new Rng(seed);
  const int = (n: number) => Math.floor(rng.next() * n);
  const prefixes = Array.from({ length: 3 }, () => Array.from({ length: 4 + int(20) }, () => 1000 + int(5000)));
  return Array.from({ length: count }, (_, r) => {
    const promptIds = [...prefixes[int(3)]!.slice(0, 1 + int(20)), ...Array.from({ length: int(6) }, () => 1000 + int(5000))];
    const maxNewTokens = 1 + int(40);
    const oracle = hashModelOutput(promptIds, maxNewTokens);
    const params: Partial<SamplingParams> = { temperature: 0, maxNewTokens, ignoreEos: true, n: int(4) === 0 ? 2 + int(2) : 1 };
    const kind = int(4);
    if (kind === 1) params.stopTokenIds = [oracle[int(oracle.length)]!];
    if (kind === 2) {
      const text = model.tokenizer.decode([oracle[int(oracle.length)]!]).trim();
      if (text.length > 0) params.stop = [text];
    }
    if (kind === 3) params.logprobs = 0;
    return { id: `r${r}`, promptIds, params };
  });
}

/** What a sample's deltas say, without timing and cache-dependent usage. */
function outcome(sample: Sample) {
  return { tokenIds: sample.tokenIds, text: sample.text, finishReason: sample.finishReason, matchedStop: sample.matchedStop, completionTokens: sample.deltas.at(-1)!.usage?.completionTokens };
}

async function runMix(overlap: boolean, requests: MixRequest[], options: Partial<EngineOptions> = {}) {
  const { engine, backend } = await hashEngine(overlap, options);
  const results = await Promise.all(requests.map((r) => collect(engine.generate({ id: r.id, promptTokenIds: r.promptIds, params: r.params }))));
  await expectKvFree(engine, options.pageSize ?? 1);
  await engine.close();
  return { outcomes: results.map((samples) => samples.map(outcome)), overlappedRows: backend.overlappedRows };
}

describe('overlap schedule: step N+1 launched before step N returned', () => {
  // KV pressure (retraction) with overlap: test/engine/scheduler-stress.test.ts.
  for (const [pageSize, chunkedPrefillSize] of [
    [1, 8192],
    [4, 8192],
    [2, 5], // prompts in chunks: a prompt's next chunk is planned while its last one runs
  ] as const) {
    it(`the same tokens, texts and finish reasons with and without overlap (page size ${pageSize}, chunks of ${chunkedPrefillSize})`, async () => {
      const requests = requestMix(pageSize * 7 + chunkedPrefillSize, 48);
      const options = { pageSize, chunkedPrefillSize, maxPrefillTokens: 64 };
      const on = await runMix(true, requests, options);
      const off = await runMix(false, requests, options);
      expect(on.overlappedRows).toBeGreaterThan(0);
      expect(off.overlappedRows).toBe(0);
      expect(on.outcomes).toEqual(off.outcomes);
      // And both are the hash model's output, cut where a stop id first occurs.
      requests.forEach((r, i) => {
        const oracle = hashModelOutput(r.promptIds, r.params.maxNewTokens!);
        const stopAt = r.params.stopTokenIds ? oracle.indexOf(r.params.stopTokenIds[0]!) : -1;
        const expected = stopAt >= 0 ? oracle.slice(0, stopAt + 1) : oracle;
        for (const sample of on.outcomes[i]!) {
          if (r.params.stop) expect(expected.slice(0, sample.tokenIds.length)).toEqual(sample.tokenIds);
          else expect(sample.tokenIds).toEqual(expected);
        }
      });
    });
  }

  it('a stop id found in step N: the token step N+1 computed for the sample is discarded, its KV freed', async () => {
    const { promptIds, expected, stopId } = promptWithStop(1, 12, 5);
    for (const overlap of [true, false]) {
      const { engine, backend } = await hashEngine(overlap);
      const [sample] = await collect(engine.generate({ promptTokenIds: promptIds, params: { temperature: 0, maxNewTokens: 30, stopTokenIds: [stopId] } }));
      expect(sample!.tokenIds).toEqual(expected.slice(0, 6));
      expect(sample!.finishReason).toBe('stop');
      expect(sample!.matchedStop).toBe(stopId);
      expect(sample!.deltas.at(-1)!.usage!.completionTokens).toBe(6);
      // The prompt's step gives token 0 and five decode steps tokens 1-5; with overlap one more step was already out.
      expect(backend.calls).toBe(overlap ? 7 : 6);
      const stats = engine.stats();
      expect(stats.kvPagesUsed).toBe(0);
      expect(stats.runningRequests).toBe(0);
      // The KV the extra step wrote (for the stop token's position) is what the cache hands a later request.
      const hitsBefore = stats.prefixCacheHitTokens;
      const followUp = [...promptIds, ...expected.slice(0, 6), 4242];
      const [next] = await collect(engine.generate({ promptTokenIds: followUp, params: { temperature: 0, maxNewTokens: 5 } }));
      expect(next!.tokenIds).toEqual(hashModelOutput(followUp, 5));
      expect(engine.stats().prefixCacheHitTokens - hitsBefore).toBe(promptIds.length + (overlap ? 6 : 5));
      await expectKvFree(engine);
      await engine.close();
    }
  });

  it('max_tokens is known ahead: no step runs past the last token', async () => {
    const { engine, backend } = await hashEngine(true);
    const promptIds = [1001, 1002, 1003];
    const [sample] = await collect(engine.generate({ promptTokenIds: promptIds, params: { temperature: 0, maxNewTokens: 9, ignoreEos: true } }));
    expect(sample!.tokenIds).toEqual(hashModelOutput(promptIds, 9));
    expect(sample!.finishReason).toBe('length');
    expect(backend.calls).toBe(9);
    expect(backend.overlappedRows).toBe(8);
    await expectKvFree(engine);
    await engine.close();
  });

  it('an abort landing while the overlapped step runs: no further step for the request, its token discarded, its KV freed', async () => {
    const promptIds = [2001, 2002, 2003, 2004];
    const oracle = hashModelOutput(promptIds, 30);
    for (const overlap of [true, false]) {
      const { engine, backend } = await hashEngine(overlap);
      const deltas: GenerateDelta[] = [];
      let callsAtAbort = -1;
      for await (const delta of engine.generate({ id: 'leaving', promptTokenIds: promptIds, params: { temperature: 0, maxNewTokens: 30, ignoreEos: true } })) {
        deltas.push(delta);
        if (deltas.length === 4) {
          callsAtAbort = backend.calls;
          engine.abort('leaving');
        }
      }
      expect(deltas.slice(0, 4).flatMap((d) => d.tokenIds)).toEqual(oracle.slice(0, 4));
      expect(deltas).toHaveLength(5);
      expect(deltas[4]!.finishReason).toBe('abort');
      expect(deltas[4]!.usage!.completionTokens).toBe(4);
      // With overlap the step giving token 4 was already launched when the abort came: its token never shows.
      expect(callsAtAbort).toBe(overlap ? 5 : 4);
      expect(engine.stats().kvPagesUsed).toBe(0);
      // The engine carries on; the freed pages serve the next request correctly.
      const [next] = await collect(engine.generate({ promptTokenIds: [3001, 3002], params: { temperature: 0, maxNewTokens: 6, ignoreEos: true } }));
      expect(next!.tokenIds).toEqual(hashModelOutput([3001, 3002], 6));
      expect(backend.calls).toBe(callsAtAbort + 6);
      await expectKvFree(engine);
      await engine.close();
    }
  });

  it('a sample whose next step needs its token on the host (penalties) is not run ahead', async () => {
    const { engine, backend } = await hashEngine(true);
    const promptIds = [1001, 1002, 1003];
    const [sample] = await collect(engine.generate({ promptTokenIds: promptIds, params: { temperature: 0, maxNewTokens: 8, ignoreEos: true, repetitionPenalty: 1.3 } }));
    expect(sample!.tokenIds).toEqual(hashModelOutput(promptIds, 8));
    expect(backend.overlappedRows).toBe(0);
    await engine.close();
  });

  it('two steps out at once with overlap, one with disableOverlapSchedule (--disable-overlap-schedule)', async () => {
    for (const overlap of [true, false]) {
      const { engine, backend } = await hashEngine(overlap);
      let inFlight = 0;
      let most = 0;
      const forward = backend.forward.bind(backend);
      // Each step "runs" for a timer tick; timers fire in order, so steps still complete in launch order.
      backend.forward = async (batch) => {
        most = Math.max(most, ++inFlight);
        await new Promise((resolve) => setTimeout(resolve, 1));
        try {
          return await forward(batch);
        } finally {
          inFlight--;
        }
      };
      const [sample] = await collect(engine.generate({ promptTokenIds: [1001, 1002], params: { temperature: 0, maxNewTokens: 6, ignoreEos: true } }));
      expect(sample!.tokenIds).toEqual(hashModelOutput([1001, 1002], 6));
      expect(most).toBe(overlap ? 2 : 1);
      expect(backend.overlappedRows).toBe(overlap ? 5 : 0);
      await engine.close();
    }
  });
});
