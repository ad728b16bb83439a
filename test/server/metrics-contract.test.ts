import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { parsePrometheusText, samplesByKey, type PromExposition } from '../support/prometheus-text.js';
import { json, startTestServer, waitFor } from '../support/test-server.js';

// What llm-d's endpoint picker, the vLLM production stack and vLLM's / SGLang's dashboards read.
const families: Record<string, 'gauge' | 'counter' | 'histogram'> = {
  'vllm:num_requests_running': 'gauge',
  'vllm:num_requests_waiting': 'gauge',
  'vllm:kv_cache_usage_perc': 'gauge',
  'vllm:gpu_cache_usage_perc': 'gauge',
  'vllm:cache_config_info': 'gauge',
  'vllm:prompt_tokens_total': 'counter',
  'vllm:generation_tokens_total': 'counter',
  'vllm:request_success_total': 'counter',
  'vllm:prefix_cache_queries_total': 'counter',
  'vllm:prefix_cache_hits_total': 'counter',
  'vllm:num_preemptions_total': 'counter',
  'vllm:time_to_first_token_seconds': 'histogram',
  'vllm:inter_token_latency_seconds': 'histogram',
  'vllm:time_per_output_token_seconds': 'histogram',
  'vllm:e2e_request_latency_seconds': 'histogram',
  'vllm:request_queue_time_seconds': 'histogram',
  'vllm:request_prefill_time_seconds': 'histogram',
  'vllm:request_decode_time_seconds': 'histogram',
  'vllm:request_inference_time_seconds': 'histogram',
  'vllm:request_prompt_tokens': 'histogram',
  'vllm:request_generation_tokens': 'histogram',
  'sglang:num_running_reqs': 'gauge',
  'sglang:num_queue_reqs': 'gauge',
  'sglang:token_usage': 'gauge',
  'sglang:num_used_tokens': 'gauge',
  'sglang:cache_hit_rate': 'gauge',
  'sglang:prompt_tokens_total': 'counter',
  'sglang:generation_tokens_total': 'counter',
  'sglang:num_requests_total': 'counter',
  'sglang:time_to_first_token_seconds': 'histogram',
  'sglang:inter_token_latency_seconds': 'histogram',
  'sglang:e2e_request_latency_seconds': 'histogram',
};
const fractions = ['vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc', 'sglang:token_usage', 'sglang:cache_hit_rate'];
const counters = Object.keys(families).filter((name) => families[name] === 'counter');
const servedName = 'served-tiny';

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer({ servedModelName: servedName });
});

afterAll(async () => {
  await server?.shutdown(5000);
});

async function scrape(): Promise<PromExposition> {
  const response = await fetch(`${server.url}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await response.text());
}

function post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
}

/** Checks one scrape against the contract; returns its samples by key. */
function checkScrape(exposition: PromExposition): Map<string, number> {
  for (const [name, type] of Object.entries(families)) expect(exposition.types.get(name), name).toBe(type);
  for (const sample of exposition.samples) {
    expect(sample.labels.model_name, sample.name).toBe(servedName);
    expect(Number.isFinite(sample.value) || sample.labels.le === '+Inf', sample.name).toBe(true);
  }
  const values = samplesByKey(exposition);
  for (const name of fractions) {
    const v = values.get(name)!;
    expect(v, name).toBeGreaterThanOrEqual(0);
    expect(v, name).toBeLessThanOrEqual(1);
  }
  expect(values.get('vllm:kv_cache_usage_perc')).toBe(values.get('vllm:gpu_cache_usage_perc'));
  expect(values.get('vllm:kv_cache_usage_perc')).toBe(values.get('sglang:token_usage'));
  expect(values.get('vllm:num_requests_running')).toBe(values.get('sglang:num_running_reqs'));
  const info = exposition.samples.filter((s) => s.name === 'vllm:cache_config_info');
  expect(info).toHaveLength(1);
  expect(info[0]!.value).toBe(1);
  expect(Number(info[0]!.labels.block_size)).toBe(server.context.engine.stats().pageSize);
  expect(Number(info[0]!.labels.num_gpu_blocks)).toBe(server.context.engine.stats().kvPagesTotal);
  // Latencies in seconds: vLLM's TTFT buckets run from 1 ms to 2560 s.
  const ttftBuckets = exposition.samples.filter((s) => s.name === 'vllm:time_to_first_token_seconds_bucket').map((s) => s.labels.le);
  expect(ttftBuckets[0]).toBe('0.001');
  expect(ttftBuckets.at(-2)).toBe('2560');
  expect(ttftBuckets.at(-1)).toBe('+Inf');
  return values;
}

const delta = (after: Map<string, number>, before: Map<string, number>, key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);

describe('/metrics contract (vLLM and SGLang names)', () => {
  it('every name, type and label, scraped while requests run; counters agree with what was sent', async () => {
    const before = checkScrape(await scrape());
    const startedAt = performance.now();
    let scraping = true;
    let scrapes = 0;
    let sawRunning = false;
    let previous = before;
    const scraper = (async () => {
      while (scraping) {
        const values = checkScrape(await scrape());
        for (const name of counters) expect(values.get(name) ?? 0, name).toBeGreaterThanOrEqual(previous.get(name) ?? 0);
        if ((values.get('vllm:num_requests_running') ?? 0) > 0) sawRunning = true;
        previous = values;
        scrapes++;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();

    // One request that stops at a stop token (its first greedy token), learned from a first run.
    const probe = await json(post('/generate', { input_ids: [1, 2, 3, 4, 5], sampling_params: { max_new_tokens: 4, temperature: 0, ignore_eos: true } }));
    const stopped = await json(
      post('/generate', { input_ids: [1, 2, 3, 4, 5], sampling_params: { max_new_tokens: 4, temperature: 0, stop_token_ids: [probe.output_ids[0]] } }),
    );
    expect(stopped.meta_info.finish_reason.type).toBe('stop');
    // Eight that run out of tokens, two of them with n = 2 (still one request each).
    const lengthy = await Promise.all(
      Array.from({ length: 8 }, async (_, i) =>
        json(post('/v1/completions', { prompt: `request number ${i} of the metrics test`, max_tokens: 24, temperature: 0, ignore_eos: true, n: i < 2 ? 2 : 1 })),
      ),
    );
    for (const answer of lengthy) for (const choice of answer.choices) expect(choice.finish_reason).toBe('length');
    scraping = false;
    await scraper;
    const wallSeconds = (performance.now() - startedAt) / 1000;
    const after = checkScrape(await scrape());
    expect(scrapes).toBeGreaterThan(3);
    expect(sawRunning).toBe(true);

    const promptTokens = 2 * probe.meta_info.prompt_tokens + lengthy.reduce((n, a) => n + a.usage.prompt_tokens, 0);
    const generated = probe.meta_info.completion_tokens + stopped.meta_info.completion_tokens + lengthy.reduce((n, a) => n + a.usage.completion_tokens, 0);
    expect(stopped.meta_info.completion_tokens).toBe(1);
    for (const prefix of ['vllm', 'sglang']) {
      expect(delta(after, before, `${prefix}:prompt_tokens_total`)).toBe(promptTokens);
      expect(delta(after, before, `${prefix}:generation_tokens_total`)).toBe(generated);
    }
    expect(delta(after, before, 'vllm:request_success_total{finished_reason="stop"}')).toBe(1);
    expect(delta(after, before, 'vllm:request_success_total{finished_reason="length"}')).toBe(9);
    expect(delta(after, before, 'sglang:num_requests_total')).toBe(10);
    expect(delta(after, before, 'sluice:request_aborted_total')).toBe(0);
    // Request-level histograms: one observation per request; token sums as sent.
    for (const name of ['e2e_request_latency_seconds', 'request_queue_time_seconds', 'request_prefill_time_seconds', 'request_decode_time_seconds', 'request_inference_time_seconds', 'time_to_first_token_seconds']) {
      expect(delta(after, before, `vllm:${name}_count`), name).toBe(10);
    }
    expect(delta(after, before, 'vllm:request_prompt_tokens_sum')).toBe(promptTokens);
    expect(delta(after, before, 'vllm:request_generation_tokens_sum')).toBe(generated);
    // One gap per token after a sample's first; one time-per-output-token per sample of 2+ tokens.
    const samples = 1 + 1 + 10;
    expect(delta(after, before, 'vllm:inter_token_latency_seconds_count')).toBe(generated - samples);
    expect(delta(after, before, 'vllm:time_per_output_token_seconds_count')).toBe(samples - 1);
    // Seconds, not milliseconds: no request took longer than the whole run.
    const e2eSum = delta(after, before, 'vllm:e2e_request_latency_seconds_sum');
    expect(e2eSum).toBeGreaterThan(0);
    expect(e2eSum / 10).toBeLessThanOrEqual(wallSeconds);
    expect(delta(after, before, 'vllm:time_to_first_token_seconds_sum') / 10).toBeLessThanOrEqual(wallSeconds);
    // Prefix cache: looked up once per request at admission (samples of n > 1 share sample 0's prompt,
    // which is neither a query nor a hit); the two /generate runs share their prompt's first 4 tokens.
    expect(delta(after, before, 'vllm:prefix_cache_queries_total')).toBe(promptTokens);
    expect(delta(after, before, 'vllm:prefix_cache_hits_total')).toBeGreaterThanOrEqual(4);
  });

  it('an aborted request counts apart from successes, once', async () => {
    const before = checkScrape(await scrape());
    const leaving = new AbortController();
    const response = await post('/v1/completions', { prompt: 'a long story', max_tokens: 2000, n: 2, temperature: 0, ignore_eos: true, stream: true }, leaving.signal);
    await response.body!.getReader().read();
    leaving.abort();
    await waitFor(async () => samplesByKey(await scrape()).get('vllm:num_requests_running') === 0, 'the aborted request to stop');
    const after = checkScrape(await scrape());
    expect(delta(after, before, 'sluice:request_aborted_total')).toBe(1);
    expect(delta(after, before, 'vllm:request_success_total{finished_reason="stop"}')).toBe(0);
    expect(delta(after, before, 'vllm:request_success_total{finished_reason="length"}')).toBe(0);
    expect(delta(after, before, 'vllm:e2e_request_latency_seconds_count')).toBe(0);
  });

  it('KV usage counts pages held by running requests, not the evictable prefix cache', async () => {
    await json(post('/v1/completions', { prompt: 'words to leave behind in the prefix cache '.repeat(8), max_tokens: 4, temperature: 0 }));
    const idle = samplesByKey(await scrape());
    expect(idle.get('vllm:num_requests_running')).toBe(0);
    expect(idle.get('sluice:kv_cache_pages_cached')).toBeGreaterThan(0);
    expect(idle.get('sluice:kv_cache_pages_used')).toBe(0);
    expect(idle.get('vllm:kv_cache_usage_perc')).toBe(0);
    expect(idle.get('sluice:kv_cache_pages_used')! + idle.get('sluice:kv_cache_pages_cached')! + idle.get('sluice:kv_cache_pages_free')!).toBe(
      idle.get('sluice:kv_cache_pages_total'),
    );
  });
});
