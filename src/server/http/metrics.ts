import { contentType, Exposition, type Histogram, type LabelledCounter } from './exposition.js';
import type { EngineStats } from '../../engine/types.js';

// Buckets as vLLM's V1 Prometheus logger has them, so its dashboards' quantiles read the same.
const ttftBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const tokenGapBuckets = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const requestLatencyBuckets = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];

/** One engine request (one prompt, all its samples) at its end, as the request-level metrics see it. */
export interface FinishedRequest {
  /** abort when any sample was aborted; else length when any sample ran out of tokens; else stop. */
  finishReason: 'stop' | 'length' | 'abort';
  promptTokens: number;
  /** Tokens of all samples together. */
  generationTokens: number;
  e2eSeconds: number;
  /** Null when the request never reached that stage (aborted in the queue). */
  queueSeconds: number | null;
  prefillSeconds: number | null;
  decodeSeconds: number | null;
  inferenceSeconds: number | null;
  /** Per sample with two tokens or more: decode time / (tokens - 1). */
  timePerOutputToken: number[];
}

/**
 * /metrics under vLLM's names (what llm-d's endpoint picker, the vLLM production stack and
 * vLLM's dashboards read) and SGLang's (what its gateway and dashboards read), every series
 * labelled with the served model name, plus the few sluice-only series that add something.
 * Engine gauges and counters are read from one engine.stats() snapshot per scrape; request
 * latencies are observed by the server as tokens arrive (once, even where both names serve them).
 */
export class ServerMetrics {
  readonly contentType = contentType;
  private readonly exposition: Exposition;
  private snapshot: EngineStats | null = null;
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly tpot: Histogram;
  private readonly e2e: Histogram;
  private readonly queueTime: Histogram;
  private readonly prefillTime: Histogram;
  private readonly decodeTime: Histogram;
  private readonly inferenceTime: Histogram;
  private readonly promptTokens: Histogram;
  private readonly generationTokens: Histogram;
  private readonly success: LabelledCounter;
  private readonly aborted: LabelledCounter;
  private readonly sglangRequests: LabelledCounter;

  constructor(
    private readonly stats: () => EngineStats,
    info: { modelName: string; maxModelLen: number },
  ) {
    const x = (this.exposition = new Exposition({ model_name: info.modelName }));
    const read = () => (this.snapshot ??= this.stats());
    const gauge = (name: string, help: string, value: (s: EngineStats) => number) => x.sampled('gauge', name, help, () => value(read()));
    const engineCounter = (name: string, help: string, value: (s: EngineStats) => number) => x.sampled('counter', name, help, () => value(read()));
    const usage = (s: EngineStats) => (s.kvPagesTotal > 0 ? s.kvPagesUsed / s.kvPagesTotal : 0);
    const hitRate = (s: EngineStats) => (s.prefixCacheQueryTokens > 0 ? s.prefixCacheHitTokens / s.prefixCacheQueryTokens : 0);

    // vLLM
    gauge('vllm:num_requests_running', 'Number of requests in model execution batches.', (s) => s.runningRequests);
    gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', (s) => s.waitingRequests);
    gauge('vllm:kv_cache_usage_perc', 'KV-cache usage by running requests (1 = 100%); evictable prefix-cache pages are not counted.', usage);
    gauge('vllm:gpu_cache_usage_perc', 'Deprecated name of vllm:kv_cache_usage_perc (same value).', usage);
    const first = this.stats();
    x.info('vllm:cache_config_info', 'Information of the LLMEngine CacheConfig', {
      block_size: String(first.pageSize),
      num_gpu_blocks: String(first.kvPagesTotal),
      enable_prefix_caching: 'True',
    });
    engineCounter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.', (s) => s.promptTokensTotal);
    engineCounter('vllm:generation_tokens_total', 'Number of generation tokens processed.', (s) => s.generatedTokensTotal);
    engineCounter('vllm:prefix_cache_queries_total', 'Prefix cache queries, in terms of number of queried tokens.', (s) => s.prefixCacheQueryTokens);
    engineCounter('vllm:prefix_cache_hits_total', 'Prefix cache hits, in terms of number of cached tokens.', (s) => s.prefixCacheHitTokens);
    engineCounter('vllm:num_preemptions_total', 'Cumulative number of preemptions from the engine.', (s) => s.retractions);
    this.success = x.counter(
      'vllm:request_success_total',
      'Count of successfully processed requests (one per request, whatever its n), by finish reason.',
      'finished_reason',
      ['stop', 'length'],
    );
    this.ttft = x.histogram('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', ttftBuckets);
    this.itl = x.histogram('vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', tokenGapBuckets);
    this.tpot = x.histogram('vllm:time_per_output_token_seconds', 'Histogram of time per output token in seconds.', tokenGapBuckets);
    this.e2e = x.histogram('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', requestLatencyBuckets);
    this.queueTime = x.histogram('vllm:request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.', requestLatencyBuckets);
    this.inferenceTime = x.histogram('vllm:request_inference_time_seconds', 'Histogram of time spent in RUNNING phase for request.', requestLatencyBuckets);
    this.prefillTime = x.histogram('vllm:request_prefill_time_seconds', 'Histogram of time spent in PREFILL phase for request.', requestLatencyBuckets);
    this.decodeTime = x.histogram('vllm:request_decode_time_seconds', 'Histogram of time spent in DECODE phase for request.', requestLatencyBuckets);
    const lengthBuckets = oneTwoFiveBuckets(info.maxModelLen);
    this.promptTokens = x.histogram('vllm:request_prompt_tokens', 'Number of prefill tokens processed.', lengthBuckets);
    this.generationTokens = x.histogram('vllm:request_generation_tokens', 'Number of generation tokens processed.', lengthBuckets);

    // SGLang
    gauge('sglang:num_running_reqs', 'The number of running requests.', (s) => s.runningRequests);
    gauge('sglang:num_queue_reqs', 'The number of requests in the waiting queue.', (s) => s.waitingRequests);
    gauge('sglang:num_used_tokens', 'The number of used tokens (held by running requests).', (s) => s.kvPagesUsed * s.pageSize);
    gauge('sglang:token_usage', 'The token usage (held by running requests, 0-1).', usage);
    gauge('sglang:cache_hit_rate', 'The prefix cache hit rate (hit tokens / queried tokens since start).', hitRate);
    engineCounter('sglang:prompt_tokens_total', 'Number of prefill tokens processed.', (s) => s.promptTokensTotal);
    engineCounter('sglang:generation_tokens_total', 'Number of generation tokens processed.', (s) => s.generatedTokensTotal);
    engineCounter('sglang:cached_tokens_total', 'Number of cached prompt tokens.', (s) => s.prefixCacheHitTokens);
    this.sglangRequests = x.counter('sglang:num_requests_total', 'Number of requests processed.', undefined, ['']);
    x.alias(this.ttft, 'sglang:time_to_first_token_seconds', 'Histogram of time to first token in seconds.');
    x.alias(this.itl, 'sglang:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.');
    x.alias(this.e2e, 'sglang:e2e_request_latency_seconds', 'Histogram of End-to-end request latency in seconds');

    // sluice: the page accounting behind the usage fraction, and aborts (not successes).
    gauge('sluice:kv_cache_pages_total', 'KV cache pages in all.', (s) => s.kvPagesTotal);
    gauge('sluice:kv_cache_pages_used', 'KV cache pages held by running requests.', (s) => s.kvPagesUsed);
    gauge('sluice:kv_cache_pages_cached', 'KV cache pages only the prefix cache holds (evictable on demand).', (s) => s.kvPagesCached);
    gauge('sluice:kv_cache_pages_free', 'KV cache pages free.', (s) => s.kvPagesFree);
    this.aborted = x.counter('sluice:request_aborted_total', 'Requests aborted (client gone, abort_request, shutdown) before they finished.', undefined, ['']);
  }

  /** The exposition (UTF-8 text), from one engine snapshot. */
  render(): Buffer {
    this.snapshot = null;
    try {
      return this.exposition.render();
    } finally {
      this.snapshot = null;
    }
  }

  observeFirstToken(seconds: number): void {
    this.ttft.observe(seconds);
  }

  observeInterToken(seconds: number): void {
    this.itl.observe(seconds);
  }

  recordFinished(request: FinishedRequest): void {
    if (request.finishReason === 'abort') {
      this.aborted.inc();
      return;
    }
    this.success.inc(request.finishReason);
    this.sglangRequests.inc();
    this.e2e.observe(request.e2eSeconds);
    if (request.queueSeconds !== null) this.queueTime.observe(request.queueSeconds);
    if (request.prefillSeconds !== null) this.prefillTime.observe(request.prefillSeconds);
    if (request.decodeSeconds !== null) this.decodeTime.observe(request.decodeSeconds);
    if (request.inferenceSeconds !== null) this.inferenceTime.observe(request.inferenceSeconds);
    for (const t of request.timePerOutputToken) this.tpot.observe(t);
    this.promptTokens.observe(request.promptTokens);
    this.generationTokens.observe(request.generationTokens);
  }
}

/** 1, 2, 5, 10, 20, 50, ... up to max (vLLM's token-count buckets). */
export function oneTwoFiveBuckets(max: number): number[] {
  const buckets: number[] = [];
  for (let scale = 1; ; scale *= 10) {
    for (const m of [1, 2, 5]) {
      if (m * scale > max) return buckets;
      buckets.push(m * scale);
    }
  }
}
