import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/bench/seeded-random.js';
import {
  firstTurnPairs,
  readShareGptFile,
  sampleShareGptRequests,
  shareGptDropReason,
  type PromptCompletion,
  type ShareGptConversation,
} from '../../src/bench/sharegpt.js';
import { UserError } from '../../src/errors.js';
import { wordTokenizer, words } from '../support/word-tokenizer.js';

// With the word tokenizer a text of n words counts n + 1 tokens (BOS included, as the benchmark counts).
const pair = (promptWords: number, completionWords: number): PromptCompletion => [words(promptWords, 'p'), words(completionWords, 'c')];
const sample = (pairs: PromptCompletion[], numPrompts = 100, fixedOutputLen?: number) =>
  sampleShareGptRequests(pairs, { numPrompts, fixedOutputLen }, wordTokenizer, new SeededRandom(1));

describe('ShareGPT filter rules (bench_serving v0.3.0)', () => {
  it('skips conversations with fewer than two turns', () => {
    const conversations: ShareGptConversation[] = [
      { id: 'a', conversations: [{ from: 'human', value: 'only one turn' }] },
      { id: 'b', conversations: [] },
      { id: 'c', conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 'a' }, { from: 'human', value: 'q2' }] },
    ];
    expect(firstTurnPairs(conversations)).toEqual([['q', 'a']]);
  });

  it('drops a pair whose prompt has fewer than 4 tokens', () => {
    expect(shareGptDropReason(3, 100)).toBe('prompt too short');
    expect(shareGptDropReason(4, 100)).toBeNull();
    expect(sample([pair(2, 10), pair(3, 10)]).map((r) => r.promptLen)).toEqual([4]);
  });

  it('drops a pair whose output has fewer than 4 tokens', () => {
    expect(shareGptDropReason(100, 3)).toBe('output too short');
    expect(shareGptDropReason(100, 4)).toBeNull();
    expect(sample([pair(10, 2), pair(10, 3)]).map((r) => r.outputLen)).toEqual([4]);
  });

  it('drops a pair whose prompt has more than 1024 tokens', () => {
    expect(shareGptDropReason(1025, 10)).toBe('prompt too long');
    expect(shareGptDropReason(1024, 10)).toBeNull();
    expect(sample([pair(1024, 10), pair(1023, 10)]).map((r) => r.promptLen)).toEqual([1024]);
  });

  it('drops a pair whose prompt plus output exceed 2048 tokens, only without --sharegpt-output-len', () => {
    expect(shareGptDropReason(1000, 1049)).toBe('prompt + output too long');
    expect(shareGptDropReason(1000, 1048)).toBeNull();
    expect(shareGptDropReason(1000, 1049, 1049)).toBeNull();
    expect(sample([pair(999, 1048), pair(999, 1047)]).map((r) => r.outputLen)).toEqual([1048]);
    // With a fixed output length the completion's length does not matter.
    expect(sample([pair(999, 1500)], 100, 1100).map((r) => [r.promptLen, r.outputLen])).toEqual([[1000, 1100]]);
  });

  it('rejects a --sharegpt-output-len below 4', () => {
    expect(() => sample([pair(10, 10)], 1, 3)).toThrow(UserError);
  });

  it('stops when --num-prompts pairs are kept, in the seeded shuffle order', () => {
    const pairs = Array.from({ length: 50 }, (_, i) => pair(5 + i, 10));
    const first = sample(pairs, 7);
    expect(first).toHaveLength(7);
    expect(sample(pairs, 7)).toEqual(first);
    const other = sampleShareGptRequests(pairs, { numPrompts: 7 }, wordTokenizer, new SeededRandom(2));
    expect(other.map((r) => r.promptLen)).not.toEqual(first.map((r) => r.promptLen));
    expect(first.map((r) => r.promptLen)).not.toEqual([6, 7, 8, 9, 10, 11, 12]);
  });
});

describe('reading ShareGPT files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-sharegpt-'));

  it('reads a JSON list of conversations, strings with brackets and escapes included', () => {
    const file = join(dir, 'ok.json');
    const data = [
      { id: '1', conversations: [{ from: 'human', value: 'a [tricky] {"x": "]"} \\" value' }, { from: 'gpt', value: 'b' }] },
      { id: 2, conversations: [{ from: 'human', value: 'c\n' }] },
    ];
    writeFileSync(file, JSON.stringify(data, null, 2));
    const read = readShareGptFile(file);
    expect(read.map((c) => c.id)).toEqual(['1', '2']);
    expect(read[0]!.conversations[0]!.value).toBe(data[0]!.conversations[0]!.value);
    expect(read[1]!.conversations[0]!.value).toBe('c\n');
  });

  it('says where to get ShareGPT when the file is missing', () => {
    for (const path of [undefined, join(dir, 'missing.json')]) {
      expect(() => readShareGptFile(path)).toThrow(UserError);
      expect(() => readShareGptFile(path)).toThrow(/ShareGPT_V3_unfiltered_cleaned_split\.json.*anon8231489123\/ShareGPT_Vicuna_unfiltered/);
    }
  });

  it('names the problem in a malformed file', () => {
    const cases: [string, RegExp][] = [
      ['{"id": 1}', /not a JSON list/],
      ['[{"id": 1, "conversations": []}, {"id": 2', /not closed/],
      ['[{"id": 1, "conversations": [{"from": "human", "value": 5}]}]', /entry 0, turn 0/],
      ['[{"id": 1}]', /entry 0 has no "conversations"/],
      ['[{"id": 1, "conversations": []}, {oops}]', /entry 1/],
    ];
    for (const [text, message] of cases) {
      const file = join(dir, 'bad.json');
      writeFileSync(file, text);
      expect(() => readShareGptFile(file)).toThrow(message);
    }
  });
});
