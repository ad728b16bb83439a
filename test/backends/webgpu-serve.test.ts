import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, describe, expect, it } from 'vitest';
import { openGpuForTests } from './webgpu-harness.js';

const probe = await openGpuForTests();
probe?.destroy();

interface Server {
  child: ChildProcess;
  url: Promise<string>;
  stderr: () => string;
}

const servers: Server[] = [];

/** `sluice serve` on the tiny preset with the given backend, on a free port. */
function serve(backend: string): Server {
  const child = spawn(
    process.execPath,
    ['./bin/sluice.mjs', 'serve', '--model-path', 'tiny', '--backend', backend, '--port', '0', '--max-total-tokens', '2048', '--page-size', '4'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const url = (async () => {
    const deadline = Date.now() + 90_000;
    for (;;) {
      const match = /serving \S+ on (http:\/\/\S+)/.exec(stderr);
      if (match) return match[1]!;
      if (child.exitCode !== null) throw new Error(`sluice serve --backend ${backend} exited early:\n${stderr}`);
      if (Date.now() > deadline) throw new Error(`sluice serve --backend ${backend} did not start:\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  const server = { child, url, stderr: () => stderr };
  servers.push(server);
  return server;
}

async function complete(server: Server, body: Record<string, unknown>) {
  const response = await fetch(`${await server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', ...body }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { choices: { text: string; finish_reason: string; logprobs: { token_logprobs: number[] } | null }[] };
}

afterAll(async () => {
  for (const s of servers) {
    if (s.child.exitCode === null) {
      s.child.kill('SIGTERM');
      await once(s.child, 'exit');
    }
  }
});

describe.skipIf(probe === null)('sluice serve --backend webgpu', () => {
  it('answers completions as the reference backend does (greedy text and log-probs, concurrent requests)', async () => {
    const gpu = serve('webgpu');
    const ref = serve('ref');
    const prompts = ['The capital of France is', 'Once upon a time', 'def fibonacci(n):'];
    const request = (prompt: string) => ({ prompt, max_tokens: 10, temperature: 0, ignore_eos: true, logprobs: 1 });
    const got = await Promise.all(prompts.map((p) => complete(gpu, request(p))));
    const want = await Promise.all(prompts.map((p) => complete(ref, request(p))));
    expect(gpu.stderr()).toMatch(/webgpu/);
    for (let i = 0; i < prompts.length; i++) {
      expect(got[i]!.choices[0]!.text).toBe(want[i]!.choices[0]!.text);
      const a = got[i]!.choices[0]!.logprobs!.token_logprobs;
      const b = want[i]!.choices[0]!.logprobs!.token_logprobs;
      expect(a).toHaveLength(10);
      // The tiny preset is f32; the GPU holds its weights in f16 (shader-f16), hence the looser match.
      a.forEach((x, j) => expect(Math.abs(x - b[j]!)).toBeLessThan(0.05));
    }
  });

  it('samples with temperature, top-p and a seed on the GPU, repeatably', async () => {
    const gpu = servers[0] ?? serve('webgpu');
    const request = { prompt: 'Sampling test', max_tokens: 12, temperature: 0.9, top_p: 0.9, top_k: 50, seed: 7, ignore_eos: true };
    const first = await complete(gpu, request);
    const second = await complete(gpu, request);
    expect(first.choices[0]!.finish_reason).toBe('length');
    expect(second.choices[0]!.text).toBe(first.choices[0]!.text);
  });
});
