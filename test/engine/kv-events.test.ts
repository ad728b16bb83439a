import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blockHash, KvBlockTracker, seedHash, type KvEvent } from '../../src/engine/kv-events.js';
import { KvPool } from '../../src/engine/kv-pool.js';
import { RadixCache } from '../../src/engine/prefix-cache.js';

const low64 = (hex: string) => createHash('sha256').update(Buffer.from(hex, 'hex')).digest().readBigUInt64BE(24);

describe('KV block hashes (vLLM / llm-d: low 64 bits of SHA-256 over canonical CBOR)', () => {
  it('hashes the seed as a CBOR text string, and [parent, tokens, null] with the shortest integer heads', () => {
    expect(seedHash('')).toBe(low64('60'));
    expect(seedHash('42')).toBe(low64('623432'));
    const seed = seedHash('').toString(16).padStart(16, '0');
    // [seed (uint64), [1, 500, 70000], null]
    expect(blockHash(null, [1, 500, 70000])).toBe(low64(`83 1b${seed} 83 01 1901f4 1a00011170 f6`.replaceAll(' ', '')));
    const parent = 0x17n;
    // A parent below 24 is one byte; a 255 token takes the one-byte-argument form.
    expect(blockHash(parent, [255, 23])).toBe(low64('83 17 82 18ff 17 f6'.replaceAll(' ', '')));
    expect(blockHash(null, [1, 2], '42')).not.toBe(blockHash(null, [1, 2]));
  });
});

describe('KvBlockTracker on a radix cache', () => {
  it('stores blocks once per prefix, keeps them through splits, removes them with their last holder', async () => {
    const batches: KvEvent[][] = [];
    const tracker = new KvBlockTracker(4, (events) => batches.push(events));
    const pool = new KvPool(64, 2);
    const cache = new RadixCache(pool, tracker);
    const insert = (tokens: number[]) => {
      const pages = pool.allocate(Math.ceil(tokens.length / 2))!;
      cache.insert(tokens, tokens.length, pages);
      for (const page of pages) pool.release(page);
    };
    insert([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // Shares pages up to token 6 and parts inside the block [5..8]: the tree splits at 6 (no event),
    // block [1..4] stays shared, and only the new branch's block [5, 6, 70, 80] is stored.
    insert([1, 2, 3, 4, 5, 6, 70, 80, 90, 100]);
    await Promise.resolve();
    const stored = batches.flat().filter((e) => e.type === 'BlockStored');
    expect(stored.map((e) => e.type === 'BlockStored' && e.tokenIds)).toEqual([
      [1, 2, 3, 4, 5, 6, 7, 8],
      [5, 6, 70, 80],
    ]);
    expect(tracker.size).toBe(3);
    cache.evict(64);
    await Promise.resolve();
    const removed = batches.flat().filter((e) => e.type === 'BlockRemoved').flatMap((e) => (e.type === 'BlockRemoved' ? e.blockHashes : []));
    expect(removed).toHaveLength(3);
    expect(tracker.size).toBe(0);
    cache.clear();
    await Promise.resolve();
    expect(batches.at(-1)).toEqual([{ type: 'AllBlocksCleared' }]);
  });
});
