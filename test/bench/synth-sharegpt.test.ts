import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { SeededRandom } from '../../src/bench/seeded-random.js';
import { firstTurnPairs, readShareGptFile, sampleShareGptRequests, shareGptDropReason } from '../../src/bench/sharegpt.js';
import { drawSynthLengths, synthesizeShareGpt } from '../../src/bench/synth-sharegpt.js';
import { Tokenizer } from '../../src/model/tokenizer.js';

describe('synthetic ShareGPT', () => {
  it("has real ShareGPT's token-length statistics after the benchmark's filter", () => {
    const random = new SeededRandom(7);
    const kept: { promptLen: number; outputLen: number }[] = [];
    const total = 50_000;
    let singleTurn = 0;
    for (let i = 0; i < total; i++) {
      const l = drawSynthLengths(random);
      if (l.singleTurn) singleTurn++;
      else if (shareGptDropReason(l.promptLen, l.outputLen) === null) kept.push(l);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const prompts = kept.map((k) => k.promptLen).sort((a, b) => a - b);
    const outputs = kept.map((k) => k.outputLen).sort((a, b) => a - b);
    expect(mean(prompts)).toBeGreaterThan(227 * 0.95);
    expect(mean(prompts)).toBeLessThan(227 * 1.05);
    expect(mean(outputs)).toBeGreaterThan(190 * 0.95);
    expect(mean(outputs)).toBeLessThan(190 * 1.05);
    // Long tails: the median sits well below the mean, the top percentile near the limits...
    expect(prompts[prompts.length >> 1]!).toBeLessThan(mean(prompts) * 0.8);
    expect(prompts[Math.floor(prompts.length * 0.99)]!).toBeGreaterThan(700);
    expect(outputs[Math.floor(outputs.length * 0.99)]!).toBeGreaterThan(700);
    // ...and beyond them, so the filter drops a few percent, as on the real file.
    const dropped = (total - singleTurn - kept.length) / total;
    expect(dropped).toBeGreaterThan(0.02);
    expect(dropped).toBeLessThan(0.12);
    expect(singleTurn / total).toBeGreaterThan(0.01);
  });

  it('writes texts that re-tokenize to exactly the drawn lengths, with synthetic ids', () => {
    const tokenizer = Tokenizer.llama3();
    const conversations = synthesizeShareGpt(tokenizer, { numConversations: 60, seed: 5 });
    const random = new SeededRandom(5);
    for (const [i, c] of conversations.entries()) {
      const drawn = drawSynthLengths(random);
      expect(c.id).toBe(`synthetic-5-${i}`);
      expect(c.conversations[0]!.from).toBe('human');
      expect(tokenizer.encode(c.conversations[0]!.value).length).toBe(Math.max(1, drawn.promptLen));
      if (drawn.singleTurn) expect(c.conversations).toHaveLength(1);
      else expect(tokenizer.encode(c.conversations[1]!.value).length).toBe(drawn.outputLen);
    }
    expect(synthesizeShareGpt(tokenizer, { numConversations: 3, seed: 5 })).toEqual(conversations.slice(0, 3));
    expect(synthesizeShareGpt(tokenizer, { numConversations: 3, seed: 6 })).not.toEqual(conversations.slice(0, 3));
    const requests = sampleShareGptRequests(firstTurnPairs(conversations), { numPrompts: 1000 }, tokenizer, new SeededRandom(1));
    expect(requests.length).toBeGreaterThan(40);
    for (const r of requests) expect(r.promptLen + r.outputLen).toBeLessThanOrEqual(2048);
  });

  it('sluice dataset synth-sharegpt writes a file the benchmark reads', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'sluice-synth-')), 'synth.json');
    await main(['dataset', 'synth-sharegpt', '--num-conversations', '12', '--seed', '3', '-o', file]);
    const read = readShareGptFile(file);
    expect(read).toHaveLength(12);
    expect(read.every((c) => c.id.startsWith('synthetic-'))).toBe(true);
  });
});
