import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { expectKvFree, json, readEvents, scrapeMetrics, startTestServer, waitFor } from '../support/test-server.js';

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.shutdown(5000);
});

function post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
}

const running = async () => (await scrapeMetrics(server.url)).get('vllm:num_requests_running') ?? -1;

describe('client disconnects', () => {
  it('mid-stream: the request is aborted within a step and its KV freed', async () => {
    const before = await scrapeMetrics(server.url);
    const leaving = new AbortController();
    const response = await post('/v1/completions', { prompt: 'a long story', max_tokens: 2000, temperature: 0, ignore_eos: true, stream: true }, leaving.signal);
    const reader = response.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toMatch(/^data: /);
    leaving.abort();
    await waitFor(async () => (await running()) === 0, 'the aborted request to stop running', 5000);
    const after = await scrapeMetrics(server.url);
    const generated = after.get('vllm:generation_tokens_total')! - before.get('vllm:generation_tokens_total')!;
    expect(generated).toBeLessThan(2000);
    const aborts = (m: Map<string, number>) => m.get('sluice:request_aborted_total') ?? 0;
    expect(aborts(after) - aborts(before)).toBe(1);
    await expectKvFree(server.url);
  });

  it('while waiting for a non-streamed answer: aborted and KV freed', async () => {
    const leaving = new AbortController();
    const pending = post('/v1/chat/completions', { messages: [{ role: 'user', content: 'go on' }], max_tokens: 2000, temperature: 0, ignore_eos: true }, leaving.signal).catch(
      (e: Error) => e,
    );
    await waitFor(async () => (await running()) === 1, 'the request to run');
    leaving.abort();
    expect(await pending).toBeInstanceOf(Error);
    await waitFor(async () => (await running()) === 0, 'the aborted request to stop running', 5000);
    await expectKvFree(server.url);
  });
});

describe('200 concurrent requests', () => {
  it('all complete, well-formed, and the KV pool is free afterwards', async () => {
    const requests = Array.from({ length: 200 }, async (_, i) => {
      const stream = i % 2 === 0;
      const chat = i % 4 >= 2;
      const body = chat
        ? { messages: [{ role: 'user', content: `question ${i}` }], max_tokens: 2, temperature: 0, ignore_eos: true, stream }
        : { prompt: `prompt number ${i}`, max_tokens: 2, temperature: 0, ignore_eos: true, stream };
      const response = await post(chat ? '/v1/chat/completions' : '/v1/completions', body);
      expect(response.status).toBe(200);
      if (!stream) {
        const answer = await json(response);
        expect(answer.choices).toHaveLength(1);
        expect(answer.choices[0].finish_reason).toBe('length');
        expect(answer.usage.completion_tokens).toBe(2);
        return;
      }
      const events = await readEvents(response);
      expect(events.at(-1)).toBe('[DONE]');
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
      const tokenChunks = chat ? chunks.slice(1) : chunks;
      expect(tokenChunks).toHaveLength(2);
      expect(tokenChunks.at(-1).choices[0].finish_reason).toBe('length');
    });
    await Promise.all(requests);
    await expectKvFree(server.url);
  });
});

describe('SGLang-native /generate', () => {
  it('answers text with meta_info, the same as /v1/completions for the same greedy request', async () => {
    const response = await post('/generate', { text: 'Native route', sampling_params: { max_new_tokens: 4, temperature: 0, ignore_eos: true } });
    const native = await json(response);
    expect(native.output_ids).toHaveLength(4);
    expect(native.meta_info).toMatchObject({ completion_tokens: 4, finish_reason: { type: 'length', length: 4 } });
    const openai = await json(post('/v1/completions', { prompt: 'Native route', max_tokens: 4, temperature: 0, ignore_eos: true }));
    expect(native.text).toBe(openai.choices[0].text);
    expect(native.meta_info.prompt_tokens).toBe(openai.usage.prompt_tokens);
  });

  it('takes input_ids batches and streams cumulative text', async () => {
    const tokens = (await json(post('/tokenize', { prompt: 'Batch me' }))).tokens as number[];
    const batch = await json(post('/generate', { input_ids: [tokens, tokens], sampling_params: { max_new_tokens: 2, temperature: 0 } }));
    expect(batch).toHaveLength(2);
    expect(batch[0].text).toBe(batch[1].text);
    const events = await readEvents(await post('/generate', { input_ids: tokens, sampling_params: { max_new_tokens: 3, temperature: 0, ignore_eos: true }, stream: true }));
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks).toHaveLength(3);
    expect(chunks.map((c) => c.output_ids.length)).toEqual([1, 2, 3]);
    expect(chunks[2].text.startsWith(chunks[1].text)).toBe(true);
  });
});

describe('/v1/completions extras', () => {
  it('takes a list of prompts: n choices per prompt, indexed prompt-major', async () => {
    const answer = await json(post('/v1/completions', { prompt: ['first prompt', 'second prompt'], n: 2, max_tokens: 2, temperature: 0, ignore_eos: true }));
    expect(answer.choices.map((c: { index: number }) => c.index)).toEqual([0, 1, 2, 3]);
    const single = await json(post('/v1/completions', { prompt: 'second prompt', max_tokens: 2, temperature: 0, ignore_eos: true }));
    expect(answer.choices[2].text).toBe(single.choices[0].text);
    expect(answer.usage.completion_tokens).toBe(8);
    expect(answer.usage.prompt_tokens).toBe(2 * single.usage.prompt_tokens);
  });

  it('answers max_tokens 0 (as SGLang does) with no tokens and finish_reason length', async () => {
    const answer = await json(post('/v1/completions', { prompt: 'nothing more', max_tokens: 0 }));
    expect(answer.choices).toEqual([{ index: 0, text: '', logprobs: null, finish_reason: 'length', matched_stop: null }]);
    expect(answer.usage.completion_tokens).toBe(0);
    expect(answer.usage.prompt_tokens).toBeGreaterThan(0);
    const events = await readEvents(await post('/v1/completions', { prompt: 'nothing more', max_tokens: 0, stream: true }));
    expect(events).toHaveLength(2);
    expect(JSON.parse(events[0]!).choices[0]).toMatchObject({ text: '', finish_reason: 'length' });
  });

  it('echoes the prompt when asked', async () => {
    const plain = await json(post('/v1/completions', { prompt: 'Echo this', max_tokens: 2, temperature: 0 }));
    const echoed = await json(post('/v1/completions', { prompt: 'Echo this', max_tokens: 2, temperature: 0, echo: true }));
    expect(echoed.choices[0].text).toBe(`Echo this${plain.choices[0].text}`);
  });
});

describe('other routes', () => {
  it('/tokenize and /detokenize round-trip (vLLM shapes)', async () => {
    const tokenized = await json(post('/tokenize', { prompt: 'Hello world', add_special_tokens: false }));
    expect(tokenized.count).toBe(tokenized.tokens.length);
    expect(tokenized.max_model_len).toBeGreaterThan(0);
    const detokenized = await json(post('/detokenize', { tokens: tokenized.tokens }));
    expect(detokenized).toEqual({ prompt: 'Hello world' });
    const chat = await json(post('/tokenize', { messages: [{ role: 'user', content: 'Hi' }] }));
    expect(chat.count).toBeGreaterThan(tokenized.count);
  });

  it('/health, /get_model_info and /v1/models describe the served model', async () => {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const info = await json(fetch(`${server.url}/get_model_info`));
    expect(info).toMatchObject({ model_path: 'tiny', is_generation: true });
    const models = await json(fetch(`${server.url}/v1/models`));
    expect(models.data[0]).toMatchObject({ id: 'tiny', object: 'model', max_model_len: info.context_length });
  });

  it('/metrics has latency histograms, token counters and the prefix-cache hit rate', async () => {
    const prompt = 'a prompt that will be cached and then reused for the hit rate';
    await post('/v1/completions', { prompt, max_tokens: 2, temperature: 0 });
    await post('/v1/completions', { prompt, max_tokens: 2, temperature: 0 });
    const metrics = await scrapeMetrics(server.url);
    expect(metrics.get('vllm:time_to_first_token_seconds_count')).toBeGreaterThan(0);
    expect(metrics.get('vllm:inter_token_latency_seconds_count')).toBeGreaterThan(0);
    expect(metrics.get('vllm:e2e_request_latency_seconds_count')).toBeGreaterThan(0);
    expect(metrics.get('vllm:prompt_tokens_total')).toBeGreaterThan(0);
    expect(metrics.get('vllm:generation_tokens_total')).toBeGreaterThan(0);
    expect(metrics.get('vllm:prefix_cache_hits_total')).toBeGreaterThan(0);
    expect(metrics.get('sglang:cache_hit_rate')).toBeGreaterThan(0);
    expect(metrics.has('vllm:kv_cache_usage_perc')).toBe(true);
    expect(metrics.has('vllm:num_requests_waiting')).toBe(true);
  });
});
