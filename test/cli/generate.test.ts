import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { loadModel } from '../../src/model/load.js';
import { refRunner } from '../support/reference-runs.js';
import { runSluice } from '../support/sluice-process.js';

interface GenerateJson {
  text: string;
  token_ids: number[];
  prompt_token_ids: number[];
}

async function generateJson(args: string[]): Promise<GenerateJson> {
  const { code, stdout, stderr } = await runSluice(['generate', '--model-path', 'tiny', '--backend', 'ref', '--json', ...args]);
  expect(code, stderr).toBe(0);
  const lines = stdout.trimEnd().split('\n');
  expect(lines, 'exactly one JSON object on stdout').toHaveLength(1);
  return JSON.parse(lines[0]!);
}

describe('sluice generate', () => {
  const model = loadModel({ modelPath: 'tiny' });
  afterEach(() => vi.restoreAllMocks());

  it('--prompt --json prints text, token_ids and prompt_token_ids; greedy equals the ref backend run directly', async () => {
    const prompt = 'The capital of France is';
    const out = await generateJson(['--prompt', prompt, '--max-new-tokens', '12']);
    expect(out.prompt_token_ids).toEqual(model.tokenizer.encode(prompt));
    expect(out.prompt_token_ids[0]).toBe(model.tokenizer.bosTokenId);
    const ref = await refRunner(model.config, model.weights);
    const direct = await ref.greedy(out.prompt_token_ids, 12);
    await ref.close();
    expect(out.token_ids).toEqual(direct.tokens);
    expect(out.text).toBe(model.tokenizer.decode(direct.tokens));
  });

  it('runs in process through main() with the same JSON as the ref backend run directly', async () => {
    let out = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out += String(chunk);
      return true;
    });
    await main(['generate', '--model-path', 'tiny', '--backend', 'ref', '--prompt', 'Hello there', '--max-new-tokens', '5', '--json']);
    vi.restoreAllMocks();
    const result = JSON.parse(out);
    const promptIds = model.tokenizer.encode('Hello there');
    const ref = await refRunner(model.config, model.weights);
    const direct = await ref.greedy(promptIds, 5);
    await ref.close();
    expect(result.prompt_token_ids).toEqual(promptIds);
    expect(result.token_ids).toEqual(direct.tokens);
    expect(result.text).toBe(model.tokenizer.decode(direct.tokens));
  });

  it('--prompt-ids feeds the ids as they are (no BOS added)', async () => {
    const out = await generateJson(['--prompt-ids', '1,2,3', '--max-new-tokens', '5']);
    expect(out.prompt_token_ids).toEqual([1, 2, 3]);
    expect(out.token_ids).toHaveLength(5);
    const ref = await refRunner(model.config, model.weights);
    expect(out.token_ids).toEqual((await ref.greedy([1, 2, 3], 5)).tokens);
    await ref.close();
  });

  it('rejects a prompt id outside the vocabulary with one line naming it', async () => {
    const { code, stdout, stderr } = await runSluice(['generate', '--model-path', 'tiny', '--backend', 'ref', '--prompt-ids', '1,999999']);
    expect(code).not.toBe(0);
    expect(stdout).toBe('');
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/999999/);
  });
});
