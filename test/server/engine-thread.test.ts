import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StepProgress } from '../../src/engine/worker/protocol.js';
import { WorkerEngine } from '../../src/engine/worker/worker-engine.js';
import { loadModel } from '../../src/model/load.js';
import type { RunningServer } from '../../src/server/index.js';
import { expectKvFree, json, readEvents, scrapeMetrics, startTestServer, waitFor } from '../support/test-server.js';
import { KvEventSubscriber } from '../support/kv-event-subscriber.js';
import { Control, recipe, workerBackendsModule } from '../support/worker-backends.js';

/** The engine in its own thread (--engine-thread worker): what crosses the boundary must behave as on one thread. */

const post = (server: RunningServer, path: string, body: unknown, signal?: AbortSignal) =>
  fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });

describe('engine thread: aborts and counts', () => {
  let server: RunningServer;
  const control = new Int32Array(new SharedArrayBuffer(8));
  beforeAll(async () => {
    server = await startTestServer({ engineThread: 'worker', backend: recipe('controlled', control), engine: { maxTotalTokens: 65536 } });
  });
  afterAll(() => server.shutdown(1000));

  it('a client that leaves while the engine thread is mid-step: the request is aborted and its KV freed', async () => {
    const leaving = new AbortController();
    const response = await post(server, '/v1/completions', { prompt: 'a long story', max_tokens: 500, ignore_eos: true, stream: true }, leaving.signal);
    const reader = response.body!.getReader();
    await reader.read();
    // Hold the engine thread inside a step, leave, then let the step finish.
    Atomics.store(control, Control.mode, Control.stall);
    const steps = Atomics.load(control, Control.steps);
    await waitFor(async () => Atomics.load(control, Control.steps) > steps, 'a step to start');
    expect((await scrapeMetrics(server.url)).get('sluice:kv_cache_pages_used')).toBeGreaterThan(0);
    leaving.abort();
    // Freed while the step is still out: the engine thread's event loop is not blocked by a running step.
    await waitFor(async () => {
      const m = await scrapeMetrics(server.url);
      return m.get('sluice:kv_cache_pages_used') === 0 && m.get('vllm:num_requests_running') === 0;
    }, 'the KV to be freed mid-step');
    expect(Atomics.load(control, Control.mode)).toBe(Control.stall);
    Atomics.store(control, Control.mode, Control.run);
    const generated = (await scrapeMetrics(server.url)).get('vllm:generation_tokens_total')!;
    expect(generated).toBeLessThan(500);
    // The step that was out when the request left comes back to an engine that carries on.
    const after = await post(server, '/v1/completions', { prompt: 'again', max_tokens: 3 });
    expect((await json(after)).choices[0].finish_reason).toBe('length');
    await expectKvFree(server.url);
  });
});

describe.each([false, true])('engine thread: 1000 concurrent streams (steps overlapped: %s)', (overlap) => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startTestServer({ engineThread: 'worker', backend: recipe('instant', overlap), engine: { maxTotalTokens: 65536 } });
  });
  afterAll(() => server.shutdown(1000));

  it('1000 concurrent streams: every token the engine produced arrives exactly once', async () => {
    const before = (await scrapeMetrics(server.url)).get('vllm:generation_tokens_total')!;
    const count = 1000;
    const bodies = Array.from({ length: count }, (_, i) => ({ prompt: `story ${i}`, max_tokens: 3 + (i % 7), ignore_eos: true, stream: true, logprobs: 0 }));
    const answers = await Promise.all(bodies.map(async (body) => readEvents(await post(server, '/v1/completions', body))));
    let tokens = 0;
    answers.forEach((events, i) => {
      expect(events.at(-1)).toBe('[DONE]');
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      const withTokens = chunks.filter((c) => c.choices.length > 0 && c.choices[0].logprobs?.tokens?.length > 0);
      expect(withTokens.length).toBe(bodies[i]!.max_tokens);
      expect(chunks.at(-1).choices[0].finish_reason).toBe('length');
      expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
      tokens += withTokens.length;
    });
    const after = (await scrapeMetrics(server.url)).get('vllm:generation_tokens_total')!;
    expect(tokens).toBe(after - before);
    await expectKvFree(server.url);
  });
});

describe('engine thread: KV events', () => {
  it('the engine thread\'s KV events are published by the HTTP thread', async () => {
    const server = await startTestServer({ engineThread: 'worker', instant: true, kvEvents: { endpoint: 'tcp://127.0.0.1:*', blockSize: 4 }, engine: { pageSize: 4 } });
    const subscriber = new KvEventSubscriber(server.context.kvEvents!.endpoint);
    try {
      // A PUB socket drops what it sends before the subscription arrives: flush until one batch gets through.
      await waitFor(async () => {
        await fetch(`${server.url}/flush_cache`, { method: 'POST' });
        await new Promise((resolve) => setTimeout(resolve, 30));
        return subscriber.batches > 0;
      }, 'the subscription to reach the publisher');
      const prompt = 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen';
      expect((await json(post(server, '/v1/completions', { prompt, max_tokens: 8 }))).choices[0].finish_reason).toBe('length');
      await waitFor(async () => subscriber.blocks.size >= 4, 'BlockStored events for the prompt');
      expect(await (await fetch(`${server.url}/flush_cache`, { method: 'POST' })).text()).toMatch(/flushed/i);
      await waitFor(async () => subscriber.blocks.size === 0, 'AllBlocksCleared');
    } finally {
      await subscriber.close();
      await server.shutdown(1000);
    }
  });
});

describe('engine thread: failures', () => {
  it('a backend error in the engine thread fails in-flight requests with a clear error and /health turns 503', async () => {
    const control = new Int32Array(new SharedArrayBuffer(8));
    const server = await startTestServer({ engineThread: 'worker', backend: recipe('controlled', control) });
    try {
      const response = await post(server, '/v1/completions', { prompt: 'x', max_tokens: 400, ignore_eos: true, stream: true });
      const reader = response.body!.getReader();
      await reader.read();
      Atomics.store(control, Control.mode, Control.fail);
      let text = '';
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
      expect(text).toMatch(/"error":\{[^}]*"message":"[^"]*device lost/);
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      const health = await fetch(`${server.url}/health`);
      expect(health.status).toBe(503);
      expect((await json(health)).error.message).toMatch(/device lost/);
      expect((await post(server, '/v1/completions', { prompt: 'x', max_tokens: 2 })).status).toBe(503);
    } finally {
      await server.shutdown(1000);
    }
  });

  it('a crash of the engine thread fails in-flight requests, logs one clear line and turns /health to 503', async () => {
    const control = new Int32Array(new SharedArrayBuffer(8));
    const lines: string[] = [];
    const log = { debug() {}, info() {}, warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m) };
    const server = await startTestServer({ engineThread: 'worker', backend: recipe('controlled', control), log });
    try {
      const pending = post(server, '/v1/completions', { prompt: 'x', max_tokens: 400, ignore_eos: true });
      await waitFor(async () => Atomics.load(control, Control.steps) > 2, 'steps to run');
      Atomics.store(control, Control.mode, Control.crash);
      const failed = await pending;
      expect(failed.status).toBe(503);
      expect((await json(failed)).error.message).toMatch(/engine thread crashed/);
      const health = await fetch(`${server.url}/health`);
      expect(health.status).toBe(503);
      expect((await json(health)).error.message).toMatch(/engine thread crashed: Error: simulated crash/);
      expect(lines.filter((l) => l.startsWith('engine thread down: the engine thread crashed'))).toHaveLength(1);
    } finally {
      await server.shutdown(1000);
    }
  });

  it('errors the engine thread raises arrive as the same classes (a 400 names the parameter)', async () => {
    const server = await startTestServer({ engineThread: 'worker' });
    try {
      const tooLong = await post(server, '/v1/completions', { prompt: 'x', max_tokens: 1_000_000 });
      expect(tooLong.status).toBe(400);
      expect((await json(tooLong)).error.message).toMatch(/maximum context length/);
    } finally {
      await server.shutdown(1000);
    }
  });

  it('start fails with the engine thread\'s error when the backend cannot be made', async () => {
    const model = loadModel({ modelPath: 'tiny' });
    const start = WorkerEngine.start({ model, load: { modelPath: 'tiny' }, backend: { kind: 'module', module: workerBackendsModule, factory: 'noSuchFactory', args: [] }, engine: {} });
    await expect(start).rejects.toThrow(/has no function noSuchFactory/);
  });
});

describe('engine thread: run-ahead bound', () => {
  it('plans no step while more than maxStepsAhead step messages wait unread on the HTTP thread', async () => {
    const model = loadModel({ modelPath: 'tiny' });
    const steps = new Int32Array(new SharedArrayBuffer(4));
    const engine = await WorkerEngine.start({ model, load: { modelPath: 'tiny' }, backend: recipe('fixedStep', 1, steps), engine: { maxTotalTokens: 8192 } });
    try {
      const stream = engine.generate({ promptTokenIds: [1, 2, 3], params: { maxNewTokens: 300, ignoreEos: true } })[Symbol.asyncIterator]();
      const first = await stream.next(); // decoding
      // This thread takes no message for 400 ms: 1 ms steps would make ~400 of them unbounded.
      const before = Atomics.load(steps, 0);
      const until = performance.now() + 400;
      while (performance.now() < until);
      const during = Atomics.load(steps, 0) - before;
      // The steps whose messages wait, the one launched before the wait and the one that was out.
      expect(during).toBeLessThanOrEqual(StepProgress.maxStepsAhead + 2);
      let tokens = first.value!.tokenIds.length;
      for (let r = await stream.next(); !r.done; r = await stream.next()) tokens += r.value.tokenIds.length;
      expect(tokens).toBe(300);
    } finally {
      await engine.close();
    }
  });
});
