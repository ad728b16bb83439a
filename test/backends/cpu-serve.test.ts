import { afterAll, describe, expect, it } from 'vitest';
import { complete, SluiceServers } from '../support/sluice-process.js';

const servers = new SluiceServers();
afterAll(() => servers.stopAll());

const serve = (backend: string) => servers.start(['--backend', backend, '--max-total-tokens', '2048', '--page-size', '4']);

describe('sluice serve --backend cpu', () => {
  it('answers concurrent completions as the reference backend does (greedy text and log-probs)', async () => {
    const [cpu, ref] = await Promise.all([serve('cpu'), serve('ref')]);
    expect(cpu.stderr()).toMatch(/loaded: cpu: onnxruntime-node .* f32 weights/);
    const prompts = ['The capital of France is', 'Once upon a time', 'def fibonacci(n):', 'Hello'];
    const request = (prompt: string) => ({ prompt, max_tokens: 12, temperature: 0, ignore_eos: true, logprobs: 2 });
    const got = await Promise.all(prompts.map((p) => complete(cpu, request(p))));
    const want = await Promise.all(prompts.map((p) => complete(ref, request(p))));
    for (let i = 0; i < prompts.length; i++) {
      expect(got[i]!.choices[0]!.text).toBe(want[i]!.choices[0]!.text);
      const a = got[i]!.choices[0]!.logprobs!.token_logprobs;
      const b = want[i]!.choices[0]!.logprobs!.token_logprobs;
      expect(a).toHaveLength(12);
      a.forEach((x, j) => expect(Math.abs(x - b[j]!)).toBeLessThan(1e-3));
    }
  });
});
