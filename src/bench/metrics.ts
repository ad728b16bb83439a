import type { BenchTokenizer } from './tokenizer.js';
import type { BenchRequest, RequestResult } from './types.js';

/** bench_serving v0.3.0's metrics; latencies in ms, throughputs per second. */
export interface BenchmarkMetrics {
  completed: number;
  failed: number;
  totalInput: number;
  totalOutput: number;
  totalOutputRetokenized: number;
  requestThroughput: number;
  inputThroughput: number;
  outputThroughput: number;
  outputThroughputRetokenized: number;
  meanTtftMs: number;
  medianTtftMs: number;
  stdTtftMs: number;
  p99TtftMs: number;
  meanTpotMs: number;
  medianTpotMs: number;
  stdTpotMs: number;
  p99TpotMs: number;
  meanItlMs: number;
  medianItlMs: number;
  stdItlMs: number;
  p99ItlMs: number;
  meanE2eLatencyMs: number;
  medianE2eLatencyMs: number;
  p90E2eLatencyMs: number;
  p99E2eLatencyMs: number;
  /** Sum of E2E latencies over the duration: the average number of requests in flight. */
  concurrency: number;
}

/** The per-request samples the metrics summarise (successful requests only). */
export interface LatencySamples {
  ttft: number[];
  tpot: number[];
  itl: number[];
  e2e: number[];
}

export function latencySamples(results: readonly RequestResult[]): LatencySamples {
  const samples: LatencySamples = { ttft: [], tpot: [], itl: [], e2e: [] };
  for (const r of results) {
    if (!r.success) continue;
    if (r.outputLen > 1) samples.tpot.push((r.latency - r.ttft) / (r.outputLen - 1));
    for (const gap of r.itl) samples.itl.push(gap);
    samples.ttft.push(r.ttft);
    samples.e2e.push(r.latency);
  }
  return samples;
}

/**
 * Failed requests count zero tokens; request and token throughputs divide by the whole
 * benchmark duration. TTFT, TPOT and ITL statistics of an empty list are 0 (numpy's
 * mean(x or 0)); E2E statistics of an empty list are NaN, as in v0.3.0.
 */
export function calculateMetrics(
  requests: readonly BenchRequest[],
  results: readonly RequestResult[],
  durationMs: number,
  tokenizer: BenchTokenizer,
): BenchmarkMetrics {
  let completed = 0;
  let totalInput = 0;
  let totalOutput = 0;
  let totalOutputRetokenized = 0;
  results.forEach((r, i) => {
    if (!r.success) return;
    completed++;
    totalInput += requests[i]!.promptLen;
    totalOutput += r.outputLen;
    totalOutputRetokenized += tokenizer.encode(r.generatedText, false).length;
  });
  const s = latencySamples(results);
  const seconds = durationMs / 1000;
  const orZero = (x: number[]) => (x.length === 0 ? [0] : x);
  return {
    completed,
    failed: results.length - completed,
    totalInput,
    totalOutput,
    totalOutputRetokenized,
    requestThroughput: completed / seconds,
    inputThroughput: totalInput / seconds,
    outputThroughput: totalOutput / seconds,
    outputThroughputRetokenized: totalOutputRetokenized / seconds,
    meanTtftMs: mean(orZero(s.ttft)),
    medianTtftMs: percentile(orZero(s.ttft), 50),
    stdTtftMs: std(orZero(s.ttft)),
    p99TtftMs: percentile(orZero(s.ttft), 99),
    meanTpotMs: mean(orZero(s.tpot)),
    medianTpotMs: percentile(orZero(s.tpot), 50),
    stdTpotMs: std(orZero(s.tpot)),
    p99TpotMs: percentile(orZero(s.tpot), 99),
    meanItlMs: mean(orZero(s.itl)),
    medianItlMs: percentile(orZero(s.itl), 50),
    stdItlMs: std(orZero(s.itl)),
    p99ItlMs: percentile(orZero(s.itl), 99),
    meanE2eLatencyMs: mean(s.e2e),
    medianE2eLatencyMs: percentile(s.e2e, 50),
    p90E2eLatencyMs: percentile(s.e2e, 90),
    p99E2eLatencyMs: percentile(s.e2e, 99),
    concurrency: s.e2e.reduce((a, b) => a + b, 0) / durationMs,
  };
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Population standard deviation (numpy's default). */
export function std(values: readonly number[]): number {
  const m = mean(values);
  return Math.sqrt(mean(values.map((v) => (v - m) ** 2)));
}

/** numpy.percentile with linear interpolation between the closest ranks. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = ((sorted.length - 1) * p) / 100;
  const low = Math.floor(rank);
  const high = Math.min(low + 1, sorted.length - 1);
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (rank - low);
}
