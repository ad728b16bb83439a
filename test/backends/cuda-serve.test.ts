import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, describe, expect, it } from 'vitest';
import { cudaForTests } from './cuda-harness.js';

const { gpu, skipReason } = cudaForTests();

interface Server {
  child: ChildProcess;
  url: Promise<string>;
  stderr: () => string;
}

const servers: Server[] = [];

function serve(backend: string, extra: string[] = []): Server {
  const child = spawn(
    process.execPath,
    ['./bin/sluice.mjs', 'serve', '--model-path', 'tiny', '--backend', backend, '--port', '0', '--max-total-tokens', '4096', '--page-size', '16', ...extra],
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

describe.skipIf(!gpu)(`sluice serve --backend cuda ${gpu ? `on ${gpu}` : skipReason}`, () => {
  it('answers concurrent completions like the reference backend (greedy text and log-probs)', async () => {
    const cuda = serve('cuda');
    const ref = serve('ref');
    const prompts = ['The capital of France is', 'Once upon a time', 'def fibonacci(n):', 'A B C D E F G'];
    const request = (prompt: string) => ({ prompt, max_tokens: 12, temperature: 0, ignore_eos: true, logprobs: 1 });
    const got = await Promise.all(prompts.map((p) => complete(cuda, request(p))));
    const want = await Promise.all(prompts.map((p) => complete(ref, request(p))));
    expect(cuda.stderr()).toMatch(/cuda/);
    let sameText = 0;
    for (let i = 0; i < prompts.length; i++) {
      if (got[i]!.choices[0]!.text === want[i]!.choices[0]!.text) sameText++;
      const a = got[i]!.choices[0]!.logprobs!.token_logprobs;
      expect(a).toHaveLength(12);
      expect(Math.abs(a[0]! - want[i]!.choices[0]!.logprobs!.token_logprobs[0]!)).toBeLessThan(0.15);
    }
    // bf16 can flip a near-tie and the continuation then differs; most prompts must agree exactly.
    expect(sameText).toBeGreaterThanOrEqual(prompts.length / 2);
  });

  it('samples with temperature, top-p, top-k and a seed on the device, repeatably, with and without CUDA graphs', async () => {
    const graphs = servers[0] ?? serve('cuda');
    const eager = serve('cuda', ['--disable-cuda-graph']);
    const request = { prompt: 'Sampling test', max_tokens: 16, temperature: 0.9, top_p: 0.9, top_k: 50, seed: 7, ignore_eos: true };
    const first = await complete(graphs, request);
    const second = await complete(graphs, request);
    expect(first.choices[0]!.finish_reason).toBe('length');
    expect(second.choices[0]!.text).toBe(first.choices[0]!.text);
    const third = await complete(eager, request);
    expect(third.choices[0]!.finish_reason).toBe('length');
  });
});
