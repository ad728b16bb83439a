import { describe, expect, it } from 'vitest';
import type { KvBudget } from '../../src/engine/backend.js';
import { deviceKvCapacity, hostKvBudgetBytes, hostKvCapacity, hostKvMaxTokens, kvBytesPerToken } from '../../src/engine/kv-capacity.js';
import { KvPool } from '../../src/engine/kv-pool.js';
import { OptionError } from '../../src/errors.js';
import { presets } from '../../src/model/presets.js';
import { RadixCache } from '../../src/engine/prefix-cache.js';

describe('KvPool', () => {
  it('hands out pages with one reference and takes them back when the last one is released', () => {
    const pool = new KvPool(4, 2);
    const pages = pool.allocate(3)!;
    expect(new Set(pages).size).toBe(3);
    expect(pool.freePages).toBe(1);
    expect(pool.allocate(2)).toBeNull();
    expect(pool.freePages).toBe(1);
    pool.retain(pages[0]!);
    pool.release(pages[0]!);
    expect(pool.freePages).toBe(1);
    pool.release(pages[0]!);
    expect(pool.freePages).toBe(2);
    expect(() => pool.release(pages[0]!)).toThrow(/released twice/);
  });
});

/** A pool and cache where `insert` is given freshly allocated pages, as a finished sequence would. */
function setup(numPages: number, pageSize: number) {
  const pool = new KvPool(numPages, pageSize);
  const cache = new RadixCache(pool);
  const insert = (tokens: number[]) => {
    const pages = pool.allocate(Math.ceil(tokens.length / pageSize))!;
    cache.insert(tokens, tokens.length, pages);
    for (const page of pages) pool.release(page); // the sequence lets go; the cache keeps what it took
    return pages;
  };
  return { pool, cache, insert };
}

describe('RadixCache', () => {
  it('matches the longest cached prefix and splits edges where prompts diverge', () => {
    const { pool, cache, insert } = setup(32, 1);
    const pages = insert([1, 2, 3, 4, 5]);
    expect(cache.evictableTokens).toBe(5);
    const m = cache.match([1, 2, 3, 9, 9], 5);
    expect(m.length).toBe(3);
    expect(m.pages).toEqual(pages.slice(0, 3));
    expect(cache.match([1, 2, 3, 4, 5, 6], 4).length).toBe(4);
    expect(cache.match([7, 1, 2], 3).length).toBe(0);
    insert([1, 2, 3, 8, 8]); // shares 3 tokens: only the 2 new ones are kept
    expect(cache.evictableTokens).toBe(7);
    expect(pool.freePages).toBe(32 - 7);
    expect(cache.match([1, 2, 3, 8, 8], 5).length).toBe(5);
    expect(cache.match([1, 2, 3, 4, 5], 5).length).toBe(5);
  });

  it('matches in whole pages when a page holds several tokens', () => {
    const { cache, insert } = setup(32, 4);
    insert([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]); // 2 whole pages cached, the partial third is not
    expect(cache.evictableTokens).toBe(8);
    expect(cache.match([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 10).length).toBe(8);
    expect(cache.match([1, 2, 3, 4, 5, 6, 0, 8], 8).length).toBe(4);
    expect(cache.match([1, 2, 3, 4, 5, 6, 7, 8], 7).length).toBe(4);
    expect(cache.match([1, 2, 3, 0], 4).length).toBe(0);
  });

  it('never evicts locked entries and evicts the least recently used first', () => {
    const { pool, cache, insert } = setup(12, 1);
    insert([1, 1, 1, 1]);
    insert([2, 2, 2, 2]);
    insert([3, 3, 3, 3]);
    expect(pool.freePages).toBe(0);
    const locked = cache.match([1, 1, 1, 1], 4);
    cache.lock(locked.node);
    expect(cache.evictableTokens).toBe(8);
    cache.match([2, 2, 2, 2], 4); // 2 is now more recent than 3
    cache.evict(4);
    expect(pool.freePages).toBe(4);
    expect(cache.match([3, 3, 3, 3], 4).length).toBe(0);
    expect(cache.match([2, 2, 2, 2], 4).length).toBe(4);
    cache.evict(12);
    expect(pool.freePages).toBe(8);
    expect(cache.match([1, 1, 1, 1], 4).length).toBe(4);
    cache.unlock(locked.node);
    expect(cache.evictableTokens).toBe(4);
    cache.clear();
    expect(pool.freePages).toBe(12);
    expect(cache.evictableTokens).toBe(0);
  });

  it('keeps lock counts right across a split of a locked edge', () => {
    const { pool, cache, insert } = setup(16, 1);
    insert([5, 6, 7, 8]);
    const whole = cache.match([5, 6, 7, 8], 4);
    cache.lock(whole.node);
    insert([5, 6, 9]); // splits the locked edge after [5, 6]
    expect(cache.evictableTokens).toBe(1);
    cache.evict(16); // only the unlocked [9] can go
    expect(cache.match([5, 6, 9], 3).length).toBe(2);
    expect(cache.match([5, 6, 7, 8], 4).length).toBe(4);
    cache.unlock(whole.node);
    expect(cache.evictableTokens).toBe(4);
    cache.evict(16);
    expect(pool.freePages).toBe(16);
  });
});

describe('KV capacity rules', () => {
  const budget = (o: Partial<KvBudget>): KvBudget => ({ memFractionStatic: 0.88, maxTotalTokens: null, minTokens: 1, ...o });
  const gib = 2 ** 30;

  it('takes maxTotalTokens when given', () => {
    expect(deviceKvCapacity({ totalBytes: 1e12, freeBytes: 1e12 }, 1024, budget({ maxTotalTokens: 5000 }))).toBe(5000);
    expect(hostKvCapacity(1024, budget({ maxTotalTokens: 5000 }))).toBe(5000);
  });

  it('gives a device backend what memFractionStatic leaves after the weights, and names the option when that is nothing', () => {
    // 100 GiB device, 80 GiB free after the weights, 0.9 static: 80 - 10 = 70 GiB for KV.
    expect(deviceKvCapacity({ totalBytes: 100 * gib, freeBytes: 80 * gib }, 1024, budget({ memFractionStatic: 0.9 }))).toBe((70 * gib) / 1024);
    const tooLittle = () => deviceKvCapacity({ totalBytes: 100 * gib, freeBytes: 5 * gib }, 1024, budget({ memFractionStatic: 0.9, minTokens: 16 }));
    expect(tooLittle).toThrow(OptionError);
    expect(tooLittle).toThrow(/^memFractionStatic 0.9 leaves no device memory .* give maxTotalTokens$/);
    try {
      tooLittle();
    } catch (e) {
      expect((e as OptionError).option).toBe('memFractionStatic');
      expect((e as OptionError).messageNaming((o) => `<${o}>`)).toMatch(/^<memFractionStatic> 0.9 .* give <maxTotalTokens>$/);
    }
  });

  it('gives a host backend a bounded default budget', () => {
    expect(hostKvCapacity(1024, budget({}))).toBe(Math.min(hostKvMaxTokens, Math.floor(hostKvBudgetBytes / 1024)));
    expect(hostKvCapacity(1, budget({}))).toBe(hostKvMaxTokens);
  });

  it('counts K and V of every layer', () => {
    const config = { ...presets.tiny!, numLayers: 3, numKvHeads: 2, headDim: 16 };
    expect(kvBytesPerToken(config, 2)).toBe(2 * 3 * 2 * 16 * 2);
  });
});
