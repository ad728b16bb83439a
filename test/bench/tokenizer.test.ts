import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveTokenizer } from '../../src/bench/tokenizer.js';
import { UserError } from '../../src/errors.js';

describe('benchmark tokenizer lookup', () => {
  it('names the problem when no tokenizer can be found', () => {
    const empty = mkdtempSync(join(tmpdir(), 'sluice-tok-'));
    expect(() => resolveTokenizer(empty)).toThrow(/has no tokenizer\.json/);
    expect(() => resolveTokenizer('mistralai/Mistral-7B')).toThrow(UserError);
    expect(() => resolveTokenizer('mistralai/Mistral-7B')).toThrow(/--tokenizer.*tiny/);
  });
});
