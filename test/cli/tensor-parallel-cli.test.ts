import { describe, expect, it } from 'vitest';
import { runSluice } from '../support/sluice-process.js';

async function generateIds(args: string[]): Promise<number[]> {
  const { code, stdout, stderr } = await runSluice(['generate', '--model-path', 'tiny', '--backend', 'ref', '--json', '--prompt', 'Tensor parallel ranks', '--max-new-tokens', '10', ...args]);
  expect(code, stderr).toBe(0);
  return JSON.parse(stdout.trim()).token_ids;
}

describe('--tp-size on the command line', () => {
  it('generate: --tp-size 2 and --tp 4 (KV heads replicated) give the tokens of one rank', async () => {
    const single = await generateIds([]);
    expect(await generateIds(['--tp-size', '2'])).toEqual(single);
    expect(await generateIds(['--tp', '4'])).toEqual(single);
  });

  it('says in one line how many GPUs there are when cuda is asked for more', async () => {
    const { code, stderr } = await runSluice(['generate', '--model-path', 'tiny', '--backend', 'cuda', '--tp-size', '4', '--prompt', 'x']);
    expect(code).toBe(1);
    expect(stderr).toMatch(/error: --tp-size 4: this machine has [0-3] CUDA GPUs?\b[^\n]*\n$/);
  });

  it('refuses a rank count the heads do not split over', async () => {
    const { code, stderr } = await runSluice(['generate', '--model-path', 'tiny', '--backend', 'ref', '--tp-size', '3', '--prompt', 'x']);
    expect(code).toBe(1);
    expect(stderr).toMatch(/--tp-size 3: 4 attention heads do not split evenly over 3 ranks/);
  });
});
