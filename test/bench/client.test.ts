import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendRequest, type ClientBackend, type RequestSettings } from '../../src/bench/client-backends.js';
import { runBenchmark } from '../../src/bench/runner.js';
import { fetchServedModel, resolveBaseUrl } from '../../src/bench/server-info.js';
import { UserError } from '../../src/errors.js';
import { startFakeServer, type FakeServer } from '../support/fake-openai-server.js';
import { wordTokenizer } from '../support/word-tokenizer.js';

let server: FakeServer;
beforeAll(async () => {
  server = await startFakeServer({ tokenDelayMs: 3, tokenText: ' tok' });
});
afterAll(async () => {
  await server.close();
});

const settings = (overrides: Partial<RequestSettings> = {}): RequestSettings => ({
  baseUrl: server.url,
  model: 'fake-model',
  stream: true,
  ignoreEos: true,
  extraBody: {},
  timeoutMs: 10_000,
  stallTimeoutMs: 2_000,
  ...overrides,
});
const request = (prompt = 'hello', outputLen = 5) => ({ prompt, promptLen: 2, outputLen });

describe('request protocols', () => {
  it('sends the v0.3.0 completions body for sglang, vllm and sluice and times the stream', async () => {
    for (const backend of ['sglang', 'vllm', 'sluice'] as ClientBackend[]) {
      server.received.length = 0;
      const r = await sendRequest(backend, request('hello', 5), settings({ extraBody: { top_k: 1 } }));
      expect(r.error).toBe('');
      expect(r.success).toBe(true);
      expect(r.generatedText).toBe(' tok'.repeat(5));
      expect(r.outputLen).toBe(5);
      // The empty first chunk is not a token: 5 tokens give 4 gaps.
      expect(r.itl).toHaveLength(4);
      expect(r.ttft).toBeGreaterThan(0);
      expect(r.latency).toBeGreaterThanOrEqual(r.ttft + r.itl.reduce((a, b) => a + b, 0) - 1e-6);
      const sent = server.received[0]!;
      expect(sent.path).toBe('/v1/completions');
      expect(sent.body).toEqual({
        model: 'fake-model',
        prompt: 'hello',
        temperature: 0,
        best_of: 1,
        max_tokens: 5,
        stream: true,
        ignore_eos: true,
        top_k: 1,
      });
    }
  });

  it('counts a whole response as the first token with streaming off (TTFT = E2E)', async () => {
    const r = await sendRequest('sluice', request('hello', 3), settings({ stream: false }));
    expect(r.success).toBe(true);
    expect(r.generatedText).toBe(' tok'.repeat(3));
    expect(r.ttft).toBe(r.latency);
    expect(r.itl).toEqual([]);
  });

  it('speaks SGLang /generate (cumulative text) and chat completions', async () => {
    server.received.length = 0;
    const native = await sendRequest('sglang-native', request('hi', 4), settings());
    expect(native.success).toBe(true);
    expect(native.generatedText).toBe(' tok'.repeat(4));
    expect(native.itl).toHaveLength(3);
    expect(server.received[0]!.path).toBe('/generate');
    expect(server.received[0]!.body.sampling_params).toEqual({ temperature: 0, max_new_tokens: 4, ignore_eos: true });

    const chat = await sendRequest('openai-chat', request('hi', 4), settings());
    expect(chat.success).toBe(true);
    expect(chat.generatedText).toBe(' tok'.repeat(4));
    expect(chat.itl).toHaveLength(3);
    expect(server.received[1]!.path).toBe('/v1/chat/completions');
    expect(server.received[1]!.body.messages).toEqual([{ role: 'user', content: 'hi' }]);

    for (const backend of ['sglang-native', 'openai-chat'] as ClientBackend[]) {
      const whole = await sendRequest(backend, request('hi', 2), settings({ stream: false }));
      expect(whole.generatedText).toBe(' tok tok');
    }
  });

  it('sends the API key as a bearer token', async () => {
    server.received.length = 0;
    await sendRequest('vllm', request(), settings({ apiKey: 'sk-test' }));
    expect(server.received[0]!.headers.authorization).toBe('Bearer sk-test');
  });

  it('asks /v1/models for the model and resolves base URLs', async () => {
    expect(await fetchServedModel(server.url)).toBe('fake-model');
    await expect(fetchServedModel('http://127.0.0.1:1')).rejects.toThrow(/Failed to fetch model/);
    expect(resolveBaseUrl({ backend: 'vllm', host: 'localhost' })).toBe('http://localhost:8000');
    expect(resolveBaseUrl({ backend: 'sglang', host: 'h' })).toBe('http://h:30000');
    expect(resolveBaseUrl({ backend: 'sluice', host: 'h', port: 5 })).toBe('http://h:5');
    expect(resolveBaseUrl({ backend: 'vllm', host: 'h', baseUrl: 'http://x:1/' })).toBe('http://x:1');
    expect(() => resolveBaseUrl({ backend: 'vllm', host: 'h', baseUrl: 'ftp://x' })).toThrow(UserError);
  });
});

describe('failures are counted with reasons, never thrown or hung', () => {
  it('reports each kind of failure', async () => {
    const cases: [string, string][] = [
      ['[[error]]', 'HTTP 500'],
      ['[[stall]]', 'stalled'],
      ['[[hang]]', 'stalled'],
      ['[[drop]]', 'connection dropped'],
      ['[[nodone]]', 'stream ended early'],
    ];
    for (const [marker, reason] of cases) {
      const r = await sendRequest('sluice', request(`x ${marker}`), settings({ stallTimeoutMs: 300 }));
      expect(r.success, marker).toBe(false);
      expect(r.failureReason, marker).toBe(reason);
      expect(r.error.length, marker).toBeGreaterThan(0);
    }
    const refused = await sendRequest('sluice', request(), settings({ baseUrl: 'http://127.0.0.1:1' }));
    expect(refused.failureReason).toBe('connection refused');
    const slow = await sendRequest('sluice', request('x', 200), settings({ timeoutMs: 100 }));
    expect(slow.failureReason).toBe('timeout');
  });

  it('a benchmark against a misbehaving server finishes and counts failures by reason', async () => {
    const prompts = ['fine', 'x [[error]]', 'fine', 'x [[drop]]', 'x [[stall]]', 'x [[error]]', 'fine'];
    const requests = prompts.map((prompt) => ({ prompt, promptLen: 3, outputLen: 4 }));
    const run = await runBenchmark({
      ...settings({ stallTimeoutMs: 500 }),
      backend: 'sluice',
      tokenizer: wordTokenizer,
      requests,
      requestRate: Infinity,
      seed: 1,
      showProgress: false,
      log: () => {},
    });
    expect(run.failures).toEqual({ 'HTTP 500': 2, 'connection dropped': 1, stalled: 1 });
    expect(run.metrics.completed).toBe(3);
    expect(run.metrics.totalOutput).toBe(3 * 4);
    expect(run.metrics.totalInput).toBe(3 * 3);
  });

  it('stops with a clear error when the warm-up request fails', async () => {
    const run = runBenchmark({
      ...settings(),
      backend: 'sluice',
      tokenizer: wordTokenizer,
      requests: [{ prompt: '[[error]]', promptLen: 1, outputLen: 4 }],
      requestRate: Infinity,
      seed: 1,
      showProgress: false,
      log: () => {},
    });
    await expect(run).rejects.toThrow(/Initial test run failed.*HTTP 500/);
  });

  it('caps requests in flight with maxConcurrency', async () => {
    const limited = await startFakeServer({ tokenDelayMs: 2, barrier: { from: 2, until: 5 } });
    try {
      // With at most 2 in flight, the barrier (held until 4 have arrived) can never release: all stall.
      const run = await runBenchmark({
        ...settings({ baseUrl: limited.url, stallTimeoutMs: 300 }),
        backend: 'sluice',
        tokenizer: wordTokenizer,
        requests: Array.from({ length: 4 }, () => ({ prompt: 'p', promptLen: 1, outputLen: 2 })),
        requestRate: Infinity,
        maxConcurrency: 2,
        seed: 1,
        showProgress: false,
        log: () => {},
      });
      expect(run.failures.stalled).toBeGreaterThanOrEqual(2);
    } finally {
      await limited.close();
    }
  });
});
