import { describe, expect, it } from 'vitest';
import type { ForwardBatch, StepOutput } from '../../src/engine/backend.js';
import { DeltaStream } from '../../src/engine/delta-stream.js';
import { LlmEngine } from '../../src/engine/engine.js';
import { KvPool } from '../../src/engine/kv-pool.js';
import type { EngineOptions } from '../../src/engine/options.js';
import { resolveRequest } from '../../src/engine/params.js';
import { RadixCache } from '../../src/engine/prefix-cache.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { Request, Sequence } from '../../src/engine/sequence.js';
import { OptionError } from '../../src/errors.js';
import type { LoadedModel } from '../../src/model/load.js';
import { collect, model, quiet } from '../support/engine-fixtures.js';
import { HookedBackend } from '../support/hooked-backend.js';
import { InstantBackend } from '../support/instant-backend.js';

/** The tiny preset with a 128K-position model card (the instant backend computes nothing, so only the scheduler sees it). */
const longContextModel: LoadedModel = { ...model, config: { ...model.config, maxPositionEmbeddings: 131072 } };

function instantEngine(options: Partial<EngineOptions>, onForward: (batch: ForwardBatch, call: number) => void = () => {}, m = model) {
  return LlmEngine.create(m, new HookedBackend(new InstantBackend(), onForward), { logger: quiet, ...options });
}

/** Rows of a step: tokens computed and whether the row is a decode (one new token after a computed prompt). */
function rows(batch: ForwardBatch): { tokens: number; decode: boolean }[] {
  return Array.from(batch.kvLens, (kvLen, s) => {
    const tokens = batch.queryStart[s + 1]! - batch.queryStart[s]!;
    return { tokens, decode: tokens === 1 && kvLen > 1 };
  });
}

const tokens = (length: number, from = 2000) => Array.from({ length }, (_, i) => from + i);

describe('admission estimate (item 1)', () => {
  /** Sequences in the first step when `count` requests wanting the rest of a 64K context arrive together. */
  async function admittedAtOnce(count: number, scheduleConservativeness?: number): Promise<number> {
    let first = 0;
    const engine = await instantEngine(
      { maxTotalTokens: 65536, scheduleConservativeness },
      (batch, call) => void (call === 1 && (first = batch.kvLens.length)),
      longContextModel,
    );
    const streams = Array.from({ length: count }, (_, i) =>
      collect(engine.generate({ promptTokenIds: tokens(10, 3000 + 20 * i), params: { maxNewTokens: 60000, ignoreEos: true } })),
    );
    while (first === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    await engine.close();
    await Promise.all(streams);
    return first;
  }

  it('clips each request max_tokens to 4096 in the estimate, so long-context requests run together', async () => {
    // Unclipped, each would reserve 0.7 x 60000 tokens of the 65536 and they would run one at a time.
    expect(await admittedAtOnce(16)).toBe(16);
  });

  it('--schedule-conservativeness scales the reservation', async () => {
    const cautious = await admittedAtOnce(16, 10);
    expect(cautious).toBeGreaterThan(1);
    expect(cautious).toBeLessThan(16);
  });

  it('refuses a conservativeness that is not above 0', async () => {
    await expect(instantEngine({ scheduleConservativeness: 0 })).rejects.toThrow(/schedule-conservativeness|scheduleConservativeness/);
  });
});

describe('prefill bounds (items 6 and 7)', () => {
  it('--chunked-prefill-size -1 prefills a prompt longer than the step budget in one step', async () => {
    const steps: number[] = [];
    const engine = await instantEngine({ maxTotalTokens: 4096, chunkedPrefillSize: -1, maxPrefillTokens: 64 }, (b) => void steps.push(b.tokenIds.length));
    await collect(engine.generate({ promptTokenIds: tokens(200), params: { maxNewTokens: 2, ignoreEos: true } }));
    await engine.close();
    expect(steps).toEqual([200, 1]);
  });

  it('while decodes run, all prefills of a step together stay within one chunk', async () => {
    const prefillWithDecodes: number[] = [];
    let decodingSteps = 0;
    const engine = await instantEngine({ maxTotalTokens: 4096, chunkedPrefillSize: 64, maxPrefillTokens: 1024 }, (batch) => {
      const r = rows(batch);
      if (!r.some((row) => row.decode)) return;
      decodingSteps++;
      prefillWithDecodes.push(r.filter((row) => !row.decode).reduce((n, row) => n + row.tokens, 0));
    });
    const decoding = engine.generate({ promptTokenIds: tokens(5), params: { maxNewTokens: 40, ignoreEos: true } })[Symbol.asyncIterator]();
    await decoding.next(); // the first request now decodes
    const long = [1, 2].map((i) => collect(engine.generate({ promptTokenIds: tokens(300, 10000 * i), params: { maxNewTokens: 1 } })));
    await Promise.all([...long, collect({ [Symbol.asyncIterator]: () => decoding })]);
    await engine.close();
    expect(decodingSteps).toBeGreaterThan(5);
    expect(Math.max(...prefillWithDecodes)).toBe(64); // unbounded, both prompts' chunks (128) would share a step
  });
});

describe('context length (item 6)', () => {
  it("refuses a context length above the model's maximum unless allowed explicitly", async () => {
    await expect(instantEngine({ maxTotalTokens: 16384, contextLength: 8192 })).rejects.toThrow(OptionError);
    await expect(instantEngine({ maxTotalTokens: 16384, contextLength: 8192 })).rejects.toThrow(/above the model's maximum of 4096/);
    const allowed = await instantEngine({ maxTotalTokens: 16384, contextLength: 8192, allowLongContext: true });
    expect(allowed.contextLength).toBe(8192);
    await allowed.close();
    const within = await instantEngine({ maxTotalTokens: 16384, contextLength: 2048 });
    expect(within.contextLength).toBe(2048);
    await within.close();
  });
});

describe('lpm fairness (item 3)', () => {
  it('bounds how long lpm passes over a request without a cached prefix', async () => {
    const engine = await instantEngine({ maxTotalTokens: 8192, maxRunningRequests: 1, schedulePolicy: 'lpm' });
    const cached = tokens(40);
    await collect(engine.generate({ promptTokenIds: cached, params: { maxNewTokens: 1 } }));
    const order: string[] = [];
    const run = async (stream: AsyncIterable<unknown>, id: string) => {
      for await (const _ of stream) if (!order.includes(id)) order.push(id);
    };
    const params = { maxNewTokens: 2, ignoreEos: true };
    const runs = [run(engine.generate({ promptTokenIds: [model.tokenizer.bosTokenId ?? 0], params }), 'probe')];
    for (let i = 0; i < 60; i++) runs.push(run(engine.generate({ promptTokenIds: [...cached, 7 + i], params }), `hit${i}`));
    await Promise.all(runs);
    await engine.close();
    // Without the bound the probe (no cached prefix) would start after all 60 cache hits.
    expect(order.indexOf('probe')).toBeGreaterThan(0);
    expect(order.indexOf('probe')).toBeLessThanOrEqual(33);
  });
});

describe('n > 1 samples share the prompt through the cache (item 5)', () => {
  it('locks the shared prompt and counts no prefix-cache hit for it', async () => {
    const stopToken = 7;
    let evictableWhileSample1Runs = -1;
    // Sample 0 (the first row once both run) stops at the second step; sample 1 goes on alone.
    const backend = new (class extends InstantBackend {
      calls = 0;
      override async forward(batch: ForwardBatch): Promise<StepOutput> {
        const out = await super.forward(batch);
        this.calls++;
        if (this.calls === 2) out.tokens[0] = stopToken;
        if (this.calls === 3) evictableWhileSample1Runs = engine.stats().prefixCacheTokens;
        return out;
      }
    })();
    const engine = await LlmEngine.create(model, backend, { maxTotalTokens: 1024, logger: quiet });
    const prompt = tokens(40);
    const samples = await collect(engine.generate({ promptTokenIds: prompt, params: { maxNewTokens: 6, ignoreEos: true, stopTokenIds: [stopToken], n: 2 } }));
    expect(samples.map((s) => s.finishReason)).toEqual(['stop', 'length']);
    // Sample 0 left 41 computed tokens in the cache; sample 1 locks the 39 prompt tokens it reuses,
    // so only 2 are evictable (unlocked, all 41 would count as free while sample 1 still uses them).
    expect(evictableWhileSample1Runs).toBe(2);
    // A cold cache: sharing sample 0's prompt is no cache hit.
    expect(samples.map((s) => s.deltas.at(-1)!.usage!.cachedTokens)).toEqual([0, 0]);
    expect(engine.stats().prefixCacheHitTokens).toBe(0);
    // A second request with the same prompt does hit the cache, and every sample reports it.
    const again = await collect(engine.generate({ promptTokenIds: prompt, params: { maxNewTokens: 2, ignoreEos: true, n: 2 } }));
    expect(again.map((s) => s.deltas.at(-1)!.usage!.cachedTokens)).toEqual([39, 39]);
    expect(engine.stats().prefixCacheHitTokens).toBe(39);
    await engine.close();
  });
});

describe('eviction (item 4)', () => {
  it('evicts once per step for what all running sequences need', () => {
    const pool = new KvPool(64, 1);
    let evictCalls = 0;
    const cache = new (class extends RadixCache {
      override evict(pages: number): void {
        evictCalls++;
        super.evict(pages);
      }
    })(pool);
    const scheduler = new Scheduler(
      pool,
      cache,
      { pageSize: 1, chunkedPrefillSize: 64, maxPrefillTokens: 64, maxRunningRequests: 8, policy: 'fcfs', scheduleConservativeness: 1, lpmMaxPassOvers: 32, retractionWarningIntervalMs: 0 },
      () => {},
    );
    const sequences = [0, 1, 2, 3].map((i) => newSequence([100 + i, 200 + i], i));
    for (const seq of sequences) scheduler.enqueue(seq);
    const plan = scheduler.schedule()!;
    expect(plan.sequences).toHaveLength(4);
    for (const seq of sequences) {
      seq.kvLen += 2;
      seq.tokenIds.push(300);
    }
    // Fill every free page with cached, evictable entries.
    while (pool.freePages > 0) {
      const page = pool.allocate(1)![0]!;
      cache.insert([500 + page], 1, [page]);
      pool.release(page);
    }
    evictCalls = 0;
    const decode = scheduler.schedule()!;
    expect(decode.numTokens).toEqual([1, 1, 1, 1]);
    expect(evictCalls).toBe(1);
    expect(pool.freePages).toBe(0);
  });
});

function newSequence(promptIds: number[], arrival: number): Sequence {
  const params = resolveRequest({ promptTokenIds: promptIds, params: { maxNewTokens: 4 } }, model.config.vocabSize, 4096);
  const request = new Request(`r${arrival}`, promptIds, params, new Set(), new DeltaStream(() => {}), arrival);
  const seq = new Sequence(request, 0, model.tokenizer.newDetokenizer(true));
  request.sequences.push(seq);
  return seq;
}
