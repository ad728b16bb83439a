import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { expectKvFree, startTestServer } from '../support/test-server.js';

// Issue 18 item 15: what one client sends must not stall everyone else. /health answers (200)
// while the server deals with each of the probe's requests, and no event-loop turn computes for a
// second (measured in CPU time, see healthDuring).

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.shutdown(5000);
});

/**
 * Probes /health every 100 ms while `load` is in flight (each must answer 200), and watches the
 * event loop, which the server and this test share: a timer ticks every 10 ms, and for the
 * longest gap between two ticks both the wall time and this process's CPU time are kept.
 * The bound is on the CPU time. On the shared 2-core machine at load 13-20 a turn that computes
 * for 150 ms can take 2-3 s of wall time waiting for a core (a /health answer took 2.8 s there
 * with the server's turns short); the CPU time spent without letting the loop turn is what the
 * server controls, and waiting for a core does not inflate it. `wallMs` is printed with a failure.
 */
async function healthDuring(load: Promise<unknown>, url = server.url, probes = 5): Promise<{ stallCpuMs: number; wallMs: number; slowestHealthMs: number }> {
  let done = false;
  void load.finally(() => (done = true));
  const stall = { stallCpuMs: 0, wallMs: 0, slowestHealthMs: 0 };
  let lastTick = performance.now();
  let lastCpu = process.cpuUsage();
  const ticker = setInterval(() => {
    const now = performance.now();
    const cpu = process.cpuUsage(lastCpu);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    if (cpuMs > stall.stallCpuMs) Object.assign(stall, { stallCpuMs: cpuMs, wallMs: now - lastTick });
    lastTick = now;
    lastCpu = process.cpuUsage();
  }, 10);
  try {
    for (let i = 0; i < probes && !done; i++) {
      const started = performance.now();
      const response = await fetch(`${url}/health`);
      expect(response.status).toBe(200);
      stall.slowestHealthMs = Math.max(stall.slowestHealthMs, performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await load;
  } finally {
    clearInterval(ticker);
  }
  return stall;
}

/** The event loop never computed for a second or more without turning. */
function expectLoopFree(stall: { stallCpuMs: number; wallMs: number; slowestHealthMs: number }): void {
  const seen = `longest stall: ${Math.round(stall.stallCpuMs)} ms of CPU over ${Math.round(stall.wallMs)} ms of wall time; slowest /health ${Math.round(stall.slowestHealthMs)} ms`;
  expect(stall.stallCpuMs, seen).toBeLessThan(1000);
}

describe('/health stays responsive', () => {
  it('while a 10 MB text prompt is refused', async () => {
    const big = fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'lorem ipsum '.repeat(900_000), max_tokens: 1 }) });
    const stall = await healthDuring(big);
    expect((await big).status).toBe(413);
    expectLoopFree(stall);
  });

  it('while 24 requests sample at temperature 1 with no top-k (the whole vocabulary)', async () => {
    const load = Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: `sample ${i}`, max_tokens: 16, ignore_eos: true }) }).then((r) => r.json() as Promise<any>),
      ),
    );
    const stall = await healthDuring(load);
    for (const response of await load) expect(response.choices[0].finish_reason).toBe('length');
    expectLoopFree(stall);
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

  it('answers every prompt, /health throughout with no turn of a second, and the server does not keep gigabytes', async () => {
    const rssBefore = process.memoryUsage().rss;
    const prompt = Array.from({ length: 2048 }, (_, i) => `short prompt number ${i}`);
    const load = fetch(`${instant.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt, max_tokens: 2, ignore_eos: true }) }).then(
      (r) => r.json() as Promise<any>,
    );
    const stall = await healthDuring(load, instant.url, 1000);
    const response = await load;
    expect(response.choices).toHaveLength(2048);
    expect(response.choices.every((c: any) => c.finish_reason === 'length')).toBe(true);
    expect(response.usage.completion_tokens).toBe(4096);
    expectLoopFree(stall);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(1024 ** 3);
    await expectKvFree(instant.url);
  });
});
