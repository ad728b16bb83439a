import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { expectKvFree, startTestServer } from '../support/test-server.js';

// Issue 18 item 15: what one client sends must not stall everyone else. /health answers within a
// second while the server deals with each of the probe's requests.

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.shutdown(5000);
});

/** The slowest of a few /health answers taken while `load` is in flight. */
async function healthDuring(load: Promise<unknown>, url = server.url, probes = 5): Promise<number> {
  let slowest = 0;
  let done = false;
  void load.finally(() => (done = true));
  for (let i = 0; i < probes && !done; i++) {
    const started = performance.now();
    const response = await fetch(`${url}/health`);
    expect(response.status).toBe(200);
    slowest = Math.max(slowest, performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await load;
  return slowest;
}

describe('/health stays responsive', () => {
  it('while a 10 MB text prompt is refused', async () => {
    const big = fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'lorem ipsum '.repeat(900_000), max_tokens: 1 }) });
    const slowest = await healthDuring(big);
    expect((await big).status).toBe(413);
    expect(slowest).toBeLessThan(1000);
  });

  it('while 24 requests sample at temperature 1 with no top-k (the whole vocabulary)', async () => {
    const load = Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: `sample ${i}`, max_tokens: 16, ignore_eos: true }) }).then((r) => r.json() as Promise<any>),
      ),
    );
    const slowest = await healthDuring(load);
    for (const response of await load) expect(response.choices[0].finish_reason).toBe('length');
    expect(slowest).toBeLessThan(1000);
    await expectKvFree(server.url);
  });
});

describe('/health stays responsive during one /v1/completions with 2048 short prompts (OpenAI\'s largest prompt array)', () => {
  let instant: RunningServer;

  beforeAll(async () => {
    // The instant backend computes nothing: what is left is the server's and the engine's own work per prompt.
    instant = await startTestServer({ instant: true });
  });

  afterAll(async () => {
    await instant?.shutdown(5000);
  });

  it('answers every prompt, /health within a second throughout, and the server does not keep gigabytes', async () => {
    const rssBefore = process.memoryUsage().rss;
    const prompt = Array.from({ length: 2048 }, (_, i) => `short prompt number ${i}`);
    const load = fetch(`${instant.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt, max_tokens: 2, ignore_eos: true }) }).then(
      (r) => r.json() as Promise<any>,
    );
    const slowest = await healthDuring(load, instant.url, 1000);
    const response = await load;
    expect(response.choices).toHaveLength(2048);
    expect(response.choices.every((c: any) => c.finish_reason === 'length')).toBe(true);
    expect(response.usage.completion_tokens).toBe(4096);
    expect(slowest).toBeLessThan(1000);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(1024 ** 3);
    await expectKvFree(instant.url);
  });
});
