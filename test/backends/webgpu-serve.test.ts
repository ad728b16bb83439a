import { afterAll, describe, expect, it } from 'vitest';
import { complete, SluiceServers, type SluiceServer } from '../support/sluice-process.js';
import { openGpuForTests } from '../support/webgpu-harness.js';

const probe = await openGpuForTests();
probe?.destroy();

const servers = new SluiceServers();
afterAll(() => servers.stopAll());

/** `sluice serve` on the tiny preset with the given backend. */
const serve = (backend: string) => servers.start(['--backend', backend, '--max-total-tokens', '2048', '--page-size', '4']);
let webgpuServer: Promise<SluiceServer> | undefined;
/** One webgpu server for both tests. */
const webgpu = () => (webgpuServer ??= serve('webgpu'));

describe.skipIf(probe === null)('sluice serve --backend webgpu', () => {
  it('answers completions as the reference backend does (greedy text and log-probs, concurrent requests)', async () => {
    const [gpu, ref] = await Promise.all([webgpu(), serve('ref')]);
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
    const gpu = await webgpu();
    const request = { prompt: 'Sampling test', max_tokens: 12, temperature: 0.9, top_p: 0.9, top_k: 50, seed: 7, ignore_eos: true };
    const first = await complete(gpu, request);
    const second = await complete(gpu, request);
    expect(first.choices[0]!.finish_reason).toBe('length');
    expect(second.choices[0]!.text).toBe(first.choices[0]!.text);
  });
});
