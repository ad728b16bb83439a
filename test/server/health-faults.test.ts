import { describe, expect, it } from 'vitest';
import { parseFaultSpec } from '../../src/engine/fault-injection.js';
import { freePort, spawnSluice, waitForServing } from '../support/sluice-process.js';
import { expectKvFree, startTestServer, waitFor } from '../support/test-server.js';
import { Control, recipe } from '../support/worker-backends.js';

const post = (url: string, body: unknown, signal?: AbortSignal) =>
  fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });

const longRun = { prompt: 'a long story', max_tokens: 3000, temperature: 0, ignore_eos: true, stream: true };

describe('/health_generate (item 3)', () => {
  it('passes while the engine makes progress, even with the queue full', async () => {
    const server = await startTestServer({ engine: { maxRunningRequests: 1, maxQueuedRequests: 1 } });
    const leaving = new AbortController();
    try {
      const running = await post(server.url, longRun, leaving.signal);
      await running.body!.getReader().read(); // the first request runs
      const queued = post(server.url, longRun, leaving.signal); // the second fills the queue
      await waitFor(async () => server.context.engine.stats().waitingRequests === 1, 'the queue to fill');
      // Before the fix: 503 "too many requests waiting", though the server was merely busy.
      const probe = await fetch(`${server.url}/health_generate`);
      expect(probe.status).toBe(200);
      leaving.abort();
      await queued.catch(() => {});
      await expectKvFree(server.url);
    } finally {
      leaving.abort();
      await server.shutdown(1000);
    }
  });

  it('fails within its timeout when no step completes', async () => {
    // Steered through shared memory, so the backend can run in the engine thread too.
    const control = new Int32Array(new SharedArrayBuffer(8));
    const server = await startTestServer({ backend: recipe('controlled', control), wedgeTimeoutMs: 300 });
    try {
      expect((await fetch(`${server.url}/health_generate`)).status).toBe(200);
      Atomics.store(control, Control.mode, Control.stall);
      const started = Date.now();
      const probe = await fetch(`${server.url}/health_generate`);
      expect(probe.status).toBe(503);
      expect(((await probe.json()) as { error: { message: string } }).error.message).toMatch(/no engine step within 0.3 s/);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      Atomics.store(control, Control.mode, Control.fail);
      await server.shutdown(100);
    }
  });
});

describe('fault injection (item 22)', () => {
  for (const spec of ['step-throws:6', 'step-hangs:6']) {
    it(`${spec}: in-flight requests end with the error, /health is 503 at once, no KV page stays held`, async () => {
      const server = await startTestServer({
        backend: { kind: 'flags', flags: { backend: 'ref' }, fault: parseFaultSpec(spec) },
        engine: { stepTimeoutMs: 500 },
      });
      try {
        const answers = await Promise.all(
          [0, 1, 2].map((i) => post(server.url, { prompt: `request ${i}`, max_tokens: 40, temperature: 0, ignore_eos: true })),
        );
        const expected = spec.includes('throws') ? /injected fault: forward step 7 threw/ : /did not return within 0.5 s \(hung\)/;
        for (const answer of answers) {
          expect(answer.status).toBe(503);
          expect(((await answer.json()) as { error: { message: string } }).error.message).toMatch(expected);
        }
        const health = await fetch(`${server.url}/health`);
        expect(health.status).toBe(503);
        expect(((await health.json()) as { error: { message: string } }).error.message).toMatch(expected);
        const stats = server.context.engine.stats();
        expect(stats.runningRequests + stats.waitingRequests).toBe(0);
        expect(await server.context.engine.flushCache()).toBe(true);
        expect(server.context.engine.stats().kvPagesUsed).toBe(0);
      } finally {
        await server.shutdown(100);
      }
    });
  }

  it('sluice serve exits 1 with one log line naming the failure', async () => {
    const proc = spawnSluice(['serve', '--model-path', 'tiny', '--backend', 'ref', '--port', String(await freePort()), '--fault-injection', 'step-throws:3']);
    const url = await waitForServing(proc);
    const answer = await post(url, { prompt: 'hello', max_tokens: 20, temperature: 0, ignore_eos: true });
    expect(answer.status).toBe(503);
    expect(await proc.exited).toBe(1);
    const failureLines = proc.stderr().split('\n').filter((line) => /injected fault/.test(line) && !/\bHTTP\b|POST /.test(line));
    expect(failureLines).toHaveLength(1);
    expect(failureLines[0]).toMatch(/ERROR engine failed, exiting: injected fault: forward step 4 threw/);
  }, 120_000);

  it('refuses a malformed fault spec', () => {
    expect(() => parseFaultSpec('sometimes')).toThrow(/step-throws:N or step-hangs:N/);
  });
});
