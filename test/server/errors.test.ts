import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Control, recipe } from '../support/worker-backends.js';
import type { RunningServer } from '../../src/server/index.js';
import { expectKvFree, json, readEvents, scrapeMetrics, startTestServer, waitFor } from '../support/test-server.js';

const apiKey = 'sk-test-key';
const auth = { authorization: `Bearer ${apiKey}` };
let server: RunningServer;

beforeAll(async () => {
  // One running and one waiting request at most, so the queue bound is easy to reach.
  server = await startTestServer({ apiKey, engine: { maxRunningRequests: 1, maxQueuedRequests: 1 } });
});

afterAll(async () => {
  await server?.shutdown(5000);
});

async function post(path: string, body: string, headers: Record<string, string> = auth): Promise<{ status: number; json: any; headers: Headers }> {
  const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: response.status, json: await json(response), headers: response.headers };
}

function expectOpenAiError(json: any, param: string | null): void {
  expect(Object.keys(json)).toEqual(['error']);
  expect(Object.keys(json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof json.error.message).toBe('string');
  expect(json.error.param).toBe(param);
}

describe('errors in the OpenAI shape', () => {
  it('400 for malformed JSON', async () => {
    const { status, json } = await post('/v1/completions', '{"prompt": "hi", ');
    expect(status).toBe(400);
    expectOpenAiError(json, null);
    expect(json.error.message).toMatch(/not valid JSON/);
  });

  it('400 naming the parameter for wrong types and out-of-range values', async () => {
    const cases: [string, unknown, string][] = [
      ['/v1/completions', { prompt: 'hi', max_tokens: '5' }, 'max_tokens'],
      ['/v1/completions', { prompt: 'hi', max_tokens: -1 }, 'max_tokens'],
      ['/v1/completions', { prompt: 'hi', temperature: 'hot' }, 'temperature'],
      ['/v1/completions', { prompt: 'hi', top_p: 1.5 }, 'top_p'],
      ['/v1/completions', { prompt: 'hi', n: 0 }, 'n'],
      ['/v1/completions', { prompt: 'hi', logprobs: 50 }, 'logprobs'],
      ['/v1/completions', { prompt: 'hi', stop: 7 }, 'stop'],
      ['/v1/completions', { prompt: 'hi', n: 3, best_of: 2 }, 'best_of'],
      ['/v1/completions', { prompt: [1, 'a'] }, 'prompt'],
      ['/v1/completions', { prompt: [999999999] }, 'prompt'],
      ['/v1/completions', { max_tokens: 3 }, 'prompt'],
      ['/v1/chat/completions', { messages: 'hello' }, 'messages'],
      ['/v1/chat/completions', { messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }, 'top_logprobs'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], repetition_penalty: 5 }, 'repetition_penalty'],
      ['/generate', { text: 'hi', sampling_params: { max_new_tokens: -2 } }, 'sampling_params.max_new_tokens'],
      ['/generate', { sampling_params: {} }, 'text'],
    ];
    for (const [path, body, param] of cases) {
      const { status, json } = await post(path, JSON.stringify(body));
      expect({ path, body, status }).toEqual({ path, body, status: 400 });
      expectOpenAiError(json, param);
      expect(json.error.type).toBe('invalid_request_error');
    }
  });

  it('400 with the maximum-context message when prompt plus max_tokens is too long', async () => {
    const context = (await json(fetch(`${server.url}/v1/models`, { headers: auth }))).data[0].max_model_len;
    const long = await post('/v1/completions', JSON.stringify({ prompt: 'hello', max_tokens: context }));
    expect(long.status).toBe(400);
    expectOpenAiError(long.json, 'prompt');
    expect(long.json.error.code).toBe('context_length_exceeded');
    expect(long.json.error.message).toMatch(new RegExp(`maximum context length is ${context} tokens`));
    const longPrompt = await post('/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'word '.repeat(context) }] }));
    expect(longPrompt.status).toBe(400);
    expect(longPrompt.json.error.message).toMatch(/maximum context length/);
  });

  it('401 for a missing or wrong key; /health and /metrics stay open', async () => {
    const body = JSON.stringify({ prompt: 'hi', max_tokens: 1 });
    const missing = await post('/v1/completions', body, {});
    expect(missing.status).toBe(401);
    expectOpenAiError(missing.json, null);
    expect(missing.json.error.code).toBe('invalid_api_key');
    const wrong = await post('/v1/completions', body, { authorization: 'Bearer sk-wrong' });
    expect(wrong.status).toBe(401);
    expect((await fetch(`${server.url}/v1/models`)).status).toBe(401);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
  });

  it('404 for an unknown model and an unknown route', async () => {
    const model = await post('/v1/completions', JSON.stringify({ model: 'gpt-4', prompt: 'hi' }));
    expect(model.status).toBe(404);
    expectOpenAiError(model.json, 'model');
    expect(model.json.error.code).toBe('model_not_found');
    const route = await fetch(`${server.url}/v1/embeddings`, { method: 'POST', headers: auth, body: '{}' });
    expect(route.status).toBe(404);
    expectOpenAiError(await json(route), null);
  });

  it('503 with Retry-After when the queue is full; a client that leaves the queue frees its place', async () => {
    // A runs (the only running slot), B waits (the only queue place), C is refused.
    const a = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ prompt: 'running', max_tokens: 40, temperature: 0, ignore_eos: true, stream: true }),
    });
    expect(a.status).toBe(200);
    const aEvents = readEvents(a);
    const leaving = new AbortController();
    const b = fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ prompt: 'waiting', max_tokens: 2, temperature: 0 }),
      signal: leaving.signal,
    }).catch((e: Error) => e);
    await waitFor(async () => (await scrapeMetrics(server.url)).get('vllm:num_requests_waiting') === 1, 'B to wait');
    const c = await post('/v1/completions', JSON.stringify({ prompt: 'refused', max_tokens: 2 }));
    expect(c.status).toBe(503);
    expect(c.headers.get('retry-after')).toBe('1');
    expectOpenAiError(c.json, null);
    // B's client goes away while B is still queued: B leaves the queue at once.
    leaving.abort();
    expect(await b).toBeInstanceOf(Error);
    await waitFor(async () => (await scrapeMetrics(server.url)).get('vllm:num_requests_waiting') === 0, 'B to leave the queue');
    const events = await aEvents;
    expect(events.at(-1)).toBe('[DONE]');
    expect(JSON.parse(events.at(-2)!).choices[0].finish_reason).toBe('length');
    await expectKvFree(server.url, auth);
  });
});

describe('/health', () => {
  it('is 503 when the engine is wedged, then when it has died; requests in flight get a 503 error', async () => {
    // Steered through shared memory, so the backend can run in the engine thread too.
    const control = new Int32Array(new SharedArrayBuffer(8));
    const sick = await startTestServer({ backend: recipe('controlled', control), wedgeTimeoutMs: 300 });
    try {
      const ask = () => fetch(`${sick.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'x', max_tokens: 2, temperature: 0 }) });
      expect((await ask()).status).toBe(200);
      expect((await fetch(`${sick.url}/health`)).status).toBe(200);
      expect((await fetch(`${sick.url}/health_generate`)).status).toBe(200);
      Atomics.store(control, Control.mode, Control.stall);
      const stepsBefore = Atomics.load(control, Control.steps);
      const stuck = ask();
      await waitFor(async () => Atomics.load(control, Control.steps) > stepsBefore, 'the step to stall');
      await new Promise((resolve) => setTimeout(resolve, 400));
      const wedged = await fetch(`${sick.url}/health`);
      expect(wedged.status).toBe(503);
      expect((await json(wedged)).error.message).toMatch(/wedged/);
      Atomics.store(control, Control.mode, Control.fail);
      const failed = await stuck;
      expect(failed.status).toBe(503);
      expectOpenAiError(await json(failed), null);
      const dead = await fetch(`${sick.url}/health`);
      expect(dead.status).toBe(503);
      expect((await json(dead)).error.message).toMatch(/device lost/);
      expect((await fetch(`${sick.url}/health_generate`)).status).toBe(503);
      expect((await ask()).status).toBe(503);
    } finally {
      await sick.shutdown(1000);
    }
  });
});
