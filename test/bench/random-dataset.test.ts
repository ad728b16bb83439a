import { describe, expect, it } from 'vitest';
import { sampleRandomRequests } from '../../src/bench/random-dataset.js';
import { SeededRandom } from '../../src/bench/seeded-random.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
import { words } from '../support/word-tokenizer.js';

describe('random dataset', () => {
  const tokenizer = Tokenizer.llama3();
  const pairs = Array.from({ length: 40 }, (_, i) => [`Question ${i}: ${words(5 + i, 'why')}?`, 'answer'] as const);

  it('draws lengths in [len * ratio, len] and builds prompts of exactly the input length', () => {
    const requests = sampleRandomRequests(pairs, { numPrompts: 30, inputLen: 64, outputLen: 16, rangeRatio: 0.5 }, tokenizer, new SeededRandom(1));
    expect(requests).toHaveLength(30);
    for (const r of requests) {
      expect(r.promptLen).toBeGreaterThanOrEqual(32);
      expect(r.promptLen).toBeLessThanOrEqual(64);
      expect(r.outputLen).toBeGreaterThanOrEqual(8);
      expect(r.outputLen).toBeLessThanOrEqual(16);
      // Cut or repeated ShareGPT tokens decode to text that re-encodes close to the length.
      expect(Math.abs(tokenizer.encode(r.prompt).length - r.promptLen)).toBeLessThanOrEqual(r.promptLen * 0.1 + 2);
    }
    expect(new Set(requests.map((r) => r.promptLen)).size).toBeGreaterThan(5);
  });

  it('uses at least one input token with ratio 0', () => {
    const requests = sampleRandomRequests(pairs, { numPrompts: 40, inputLen: 2, outputLen: 4, rangeRatio: 0 }, tokenizer, new SeededRandom(3));
    expect(Math.min(...requests.map((r) => r.promptLen))).toBe(1);
    expect(Math.min(...requests.map((r) => r.outputLen))).toBeGreaterThanOrEqual(0);
  });
});
