import { describe, expect, it } from 'vitest';
import { hostKvBudgetBytes, hostKvMaxTokens } from '../../src/engine/kv-capacity.js';
import { runSluice, spawnSluice, waitForServing } from '../support/sluice-process.js';

async function generateIds(args: string[], backend = 'ref'): Promise<number[]> {
  const { code, stdout, stderr } = await runSluice(['generate', '--model-path', 'tiny', '--backend', backend, '--json', '--prompt', 'Tensor parallel ranks', '--max-new-tokens', '10', ...args]);
  expect(code, stderr).toBe(0);
  return JSON.parse(stdout.trim()).token_ids;
}

describe('--tp-size on the command line', () => {
  it('generate: --tp-size 2 and --tp 4 (KV heads replicated) give the tokens of one rank', async () => {
    const single = await generateIds([]);
    expect(await generateIds(['--tp-size', '2'])).toEqual(single);
    expect(await generateIds(['--tp', '4'])).toEqual(single);
    expect(await generateIds(['--tensor-parallel-size', '2'])).toEqual(single);
  });

  it('generate --backend cpu --tp 2: cpu ranks give the tokens of one cpu backend (f32 preset)', async () => {
    const single = await generateIds(['--threads', '1'], 'cpu');
    expect(await generateIds(['--threads', '1', '--tp', '2'], 'cpu')).toEqual(single);
  });

  it('serve --tp 2 (engine in its own thread) answers greedy completions with the tokens of one rank', async () => {
    const { stdout } = await runSluice(['generate', '--model-path', 'tiny', '--backend', 'ref', '--json', '--prompt', 'Tensor parallel ranks', '--max-new-tokens', '6']);
    const expected = JSON.parse(stdout.trim()).text;
    const server = spawnSluice(['serve', '--model-path', 'tiny', '--backend', 'ref', '--tp', '2', '--engine-thread', 'worker', '--port', '0', '--max-total-tokens', '4096']);
    try {
      const url = await waitForServing(server, 90_000);
      expect(server.stderr()).toMatch(/ref x 2 tensor-parallel ranks/);
      const body = JSON.stringify({ prompt: 'Tensor parallel ranks', max_tokens: 6, temperature: 0, ignore_eos: true });
      const responses = await Promise.all([0, 1].map(() => fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })));
      for (const r of responses) {
        expect(r.status).toBe(200);
        expect(((await r.json()) as { choices: { text: string }[] }).choices[0]!.text).toBe(expected);
      }
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });

  it('serve --model-path small --load-format dummy --tp-size 4 sizes the KV cache per rank', async () => {
    // small: 8 layers, 8 heads over 2 KV heads of 64. At tp 4 a rank holds 2 heads and 1 KV head
    // (each KV head on 2 ranks): 2 x 8 layers x 1 x 64 x 4 bytes = 4 KiB per token per rank, and
    // the host budget holds all four ranks' caches.
    const server = spawnSluice(['serve', '--model-path', 'small', '--load-format', 'dummy', '--backend', 'ref', '--tp-size', '4', '--port', '0']);
    try {
      const url = await waitForServing(server, 120_000);
      const tokens = Math.min(hostKvMaxTokens, Math.floor(hostKvBudgetBytes / (4 * 4096)));
      const mib = ((tokens * 4096) / 2 ** 20).toFixed(1);
      expect(server.stderr()).toContain(`per rank: 2 of 8 attention heads, 1 of 2 KV heads, each KV head replicated on 2 ranks, KV cache ${tokens} tokens x 4.0 KiB = ${mib} MiB`);
      const info = (await (await fetch(`${url}/get_server_info`)).json()) as { tp_size: number; max_total_tokens: number };
      expect(info).toMatchObject({ tp_size: 4, max_total_tokens: tokens });
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
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
