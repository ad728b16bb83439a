import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineStats, FinishReason } from '../../engine/types.js';

const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40, 80, 160];
const e2eBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 240, 480, 960, 1920];

/**
 * Prometheus metrics with vLLM-like names under the `sluice:` prefix. Engine gauges and counters
 * are read from engine.stats() at scrape time; latency histograms are observed by the server.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly timeToFirstToken: Histogram;
  readonly interTokenLatency: Histogram;
  readonly e2eLatency: Histogram;
  readonly requestsFinished: Counter<'finished_reason'>;

  constructor(stats: () => EngineStats) {
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(stats()));
        },
      });
    const engineCounter = (name: string, help: string, read: (s: EngineStats) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read(stats()));
        },
      });
    gauge('sluice:num_requests_running', 'Requests in the running batch.', (s) => s.runningRequests);
    gauge('sluice:num_requests_waiting', 'Requests waiting to be scheduled.', (s) => s.waitingRequests);
    gauge('sluice:kv_cache_usage_perc', 'Fraction of KV cache pages in use (1 = full).', (s) => (s.kvPagesTotal > 0 ? s.kvPagesUsed / s.kvPagesTotal : 0));
    gauge('sluice:kv_cache_pages_used', 'KV cache pages in use (by requests and the prefix cache).', (s) => s.kvPagesUsed);
    gauge('sluice:kv_cache_pages_free', 'KV cache pages free.', (s) => s.kvPagesFree);
    gauge('sluice:kv_cache_pages_total', 'KV cache pages in all.', (s) => s.kvPagesTotal);
    gauge('sluice:prefix_cache_tokens', 'Tokens held by the prefix cache that no running request uses.', (s) => s.prefixCacheTokens);
    gauge('sluice:prefix_cache_hit_rate', 'Prompt tokens served from the prefix cache / prompt tokens seen, since start.', (s) =>
      s.promptTokensTotal > 0 ? s.prefixCacheHitTokens / s.promptTokensTotal : 0,
    );
    engineCounter('sluice:prefix_cache_hit_tokens_total', 'Prompt tokens served from the prefix cache.', (s) => s.prefixCacheHitTokens);
    engineCounter('sluice:prompt_tokens_total', 'Prompt tokens seen.', (s) => s.promptTokensTotal);
    engineCounter('sluice:generation_tokens_total', 'Tokens generated.', (s) => s.generatedTokensTotal);
    engineCounter('sluice:num_preemptions_total', 'Requests retracted to the queue for lack of KV memory.', (s) => s.retractions);
    this.timeToFirstToken = new Histogram({
      name: 'sluice:time_to_first_token_seconds',
      help: 'Time from arrival to the first generated token.',
      buckets: latencyBuckets,
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: 'sluice:inter_token_latency_seconds',
      help: 'Time between consecutive tokens of one sample.',
      buckets: latencyBuckets,
      registers,
    });
    this.e2eLatency = new Histogram({
      name: 'sluice:e2e_request_latency_seconds',
      help: 'Time from arrival to the last token.',
      buckets: e2eBuckets,
      registers,
    });
    this.requestsFinished = new Counter({
      name: 'sluice:request_success_total',
      help: 'Finished requests by finish reason.',
      labelNames: ['finished_reason'],
      registers,
    });
  }

  recordFinish(reason: FinishReason): void {
    this.requestsFinished.inc({ finished_reason: reason });
  }
}
