import { afterAll, describe, expect, it } from 'vitest';
import { complete, SluiceServers, type SluiceServer } from '../support/sluice-process.js';
import { cudaForTests } from '../support/cuda-harness.js';

const { gpu, skipReason } = cudaForTests();

const servers = new SluiceServers();
afterAll(() => servers.stopAll());

/** `sluice serve` on the tiny preset with the given backend. */
const serve = (backend: string, extra: string[] = []) =>
  servers.start(['--backend', backend, '--max-total-tokens', '4096', '--page-size', '16', ...extra]);
let cudaServer: Promise<SluiceServer> | undefined;
/** One server with CUDA graphs for both tests. */
const cudaWithGraphs = () => (cudaServer ??= serve('cuda'));

describe.skipIf(!gpu)(`sluice serve --backend cuda ${gpu ? `on ${gpu}` : skipReason}`, () => {
  it('answers concurrent completions like the reference backend (greedy text and log-probs)', async () => {
    const [cuda, ref] = await Promise.all([cudaWithGraphs(), serve('ref')]);
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
    const [graphs, eager] = await Promise.all([cudaWithGraphs(), serve('cuda', ['--disable-cuda-graph'])]);
    const request = { prompt: 'Sampling test', max_tokens: 16, temperature: 0.9, top_p: 0.9, top_k: 50, seed: 7, ignore_eos: true };
    const first = await complete(graphs, request);
    const second = await complete(graphs, request);
    expect(first.choices[0]!.finish_reason).toBe('length');
    expect(second.choices[0]!.text).toBe(first.choices[0]!.text);
    const third = await complete(eager, request);
    expect(third.choices[0]!.finish_reason).toBe('length');
  });
});
