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
async function healthDuring(load: Promise<unknown>): Promise<number> {
  let slowest = 0;
  let done = false;
  void load.finally(() => (done = true));
  for (let i = 0; i < 5 && !done; i++) {
    const started = performance.now();
    const response = await fetch(`${server.url}/health`);
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
