import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { directGreedy, model, prompt } from './helpers.js';

describe('sluice generate (through the engine)', () => {
  afterEach(() => vi.restoreAllMocks());

  it('prints the greedy continuation as JSON', async () => {
    let out = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out += String(chunk);
      return true;
    });
    await main(['generate', '--model-path', 'tiny', '--backend', 'ref', '--prompt', 'Hello there', '--max-new-tokens', '5', '--json']);
    vi.restoreAllMocks();
    const result = JSON.parse(out);
    const promptIds = prompt('Hello there');
    const oracle = await directGreedy(promptIds, 5);
    expect(result.prompt_token_ids).toEqual(promptIds);
    expect(result.token_ids).toEqual(oracle.tokens);
    expect(result.text).toBe(model.tokenizer.decode(oracle.tokens));
  });
});
