import { describe, expect, it } from 'vitest';
import { LlmEngine } from '../../src/engine/engine.js';
import { Rng } from '../../src/model/rng.js';
import { collect, model } from '../support/engine-fixtures.js';
import { HashBackend, hashModelOutput } from '../support/hash-backend.js';

/**
 * Many requests with shared prefixes, n > 1 and aborts, through a KV pool far too small for
 * them: every request that is not aborted must produce exactly what it produces alone, and the
 * pool must end up entirely free.
 */
async function stress(seed: number, pageSize: number, disableRadixCache: boolean, chunkedPrefillSize: number, overlap = false) {
  const rng = new Rng(seed);
  const int = (n: number) => Math.floor(rng.next() * n);
  const warnings: string[] = [];
  const backend = new HashBackend({ overlapsSteps: overlap });
  const engine = await LlmEngine.create(model, backend, {
    maxTotalTokens: 192,
    pageSize,
    disableRadixCache,
    chunkedPrefillSize,
    maxPrefillTokens: 64,
    logger: { warn: (m) => warnings.push(m) },
  });
  const prefixes = Array.from({ length: 3 }, () => Array.from({ length: 5 + int(30) }, () => 1000 + int(5000)));
  const runs: Promise<void>[] = [];
  for (let r = 0; r < 40; r++) {
    const promptIds = [...prefixes[int(3)]!.slice(0, 1 + int(30)), ...Array.from({ length: int(8) }, () => 1000 + int(5000))];
    const maxNewTokens = 1 + int(80);
    const n = int(4) === 0 ? 1 + int(3) : 1;
    const abortAfter = int(5) === 0 ? int(maxNewTokens) : -1;
    const id = `r${r}`;
    const stream = engine.generate({ id, promptTokenIds: promptIds, params: { temperature: 0, maxNewTokens, n, ignoreEos: true } });
    if (abortAfter === 0) engine.abort(id);
    runs.push(
      (async () => {
        if (abortAfter > 0) {
          let seen = 0;
          for await (const delta of stream) {
            expect(delta.finishReason === null || delta.finishReason === 'abort').toBe(true);
            if (++seen === abortAfter) break;
          }
          return;
        }
        const samples = await collect(stream);
        const expected = hashModelOutput(promptIds, maxNewTokens);
        if (abortAfter === 0) {
          expect(samples.every((s) => s.finishReason === 'abort')).toBe(true);
          return;
        }
        expect(samples).toHaveLength(n);
        for (const sample of samples) {
          expect(sample.finishReason).toBe('length');
          expect(sample.tokenIds).toEqual(expected);
        }
      })(),
    );
    if (int(3) === 0) await new Promise((resolve) => setTimeout(resolve, int(3)));
  }
  await Promise.all(runs);
  const stats = engine.stats();
  expect(stats.error).toBeNull();
  expect(stats.runningRequests + stats.waitingRequests).toBe(0);
  // Idle: no page counts as used; the pages still taken are exactly the prefix cache's.
  expect(stats.kvPagesUsed).toBe(0);
  expect(stats.kvPagesCached * pageSize).toBe(stats.prefixCacheTokens);
  expect(stats.kvPagesTotal - stats.kvPagesFree).toBe(stats.kvPagesCached);
  expect(engine.flushCache()).toBe(true);
  expect(engine.stats().kvPagesUsed + engine.stats().kvPagesCached).toBe(0);
  await engine.close();
  return { retractions: stats.retractions, hits: stats.prefixCacheHitTokens, warnings, overlappedRows: backend.overlappedRows };
}

describe('scheduling under KV pressure (hash model)', () => {
  for (const [pageSize, disableRadixCache, chunk, overlap] of [
    [1, false, 8192, false],
    [1, true, 7, false],
    [4, false, 9, false],
    [2, true, 8192, false],
    [1, false, 8192, true],
    [4, false, 9, true],
    [2, true, 7, true],
  ] as const) {
    it(`page size ${pageSize}, radix cache ${disableRadixCache ? 'off' : 'on'}, chunks of ${chunk}${overlap ? ', steps overlapped' : ''}`, async () => {
      let retractions = 0;
      for (const seed of [1, 2, 3]) {
        const result = await stress(seed, pageSize, disableRadixCache, chunk, overlap);
        if (overlap) expect(result.overlappedRows).toBeGreaterThan(0);
        retractions += result.retractions;
        // Retraction warnings are rate-limited: the first is logged, the rest are counted.
        const warned = result.warnings.filter((w) => /retracted request/.test(w)).length;
        expect(warned).toBe(result.retractions > 0 ? 1 : 0);
        if (!disableRadixCache) expect(result.hits).toBeGreaterThan(0);
      }
      expect(retractions).toBeGreaterThan(0);
    });
  }
});
