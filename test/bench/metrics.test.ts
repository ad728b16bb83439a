import { describe, expect, it } from 'vitest';
import { calculateMetrics, percentile } from '../../src/bench/metrics.js';
import type { BenchRequest, RequestResult } from '../../src/bench/types.js';
import { wordTokenizer } from '../support/word-tokenizer.js';

function ok(promptLen: number, outputLen: number, ttft: number, itl: number[], latency: number, text: string): RequestResult {
  return { success: true, generatedText: text, promptLen, outputLen, ttft, itl, latency, error: '' };
}

// A recorded trace of four requests over 2 s; the expected figures are worked out by hand below.
const requests: BenchRequest[] = [10, 20, 30, 40].map((promptLen) => ({ prompt: 'p', promptLen, outputLen: 0 }));
const results: RequestResult[] = [
  ok(10, 4, 100, [10, 20, 30], 170, 'a b c d'),
  ok(20, 2, 50, [40], 95, 'x y'),
  ok(30, 1, 200, [], 200, 'z'),
  { success: false, generatedText: 'partial text', promptLen: 40, outputLen: 5, ttft: 0, itl: [], latency: 0, error: 'HTTP 500', failureReason: 'HTTP 500' },
];

describe('calculateMetrics on a recorded trace', () => {
  const m = calculateMetrics(requests, results, 2000, wordTokenizer);

  it('counts only successful requests and gives failed ones zero tokens', () => {
    expect(m.completed).toBe(3);
    expect(m.failed).toBe(1);
    expect(m.totalInput).toBe(10 + 20 + 30);
    expect(m.totalOutput).toBe(4 + 2 + 1);
    expect(m.totalOutputRetokenized).toBe(4 + 2 + 1);
  });

  it('divides by the whole duration for throughputs', () => {
    expect(m.requestThroughput).toBeCloseTo(3 / 2, 10);
    expect(m.inputThroughput).toBeCloseTo(60 / 2, 10);
    expect(m.outputThroughput).toBeCloseTo(7 / 2, 10);
  });

  it('takes TTFT statistics over successful requests (p99 interpolated like numpy)', () => {
    expect(m.meanTtftMs).toBeCloseTo((100 + 50 + 200) / 3, 10);
    expect(m.medianTtftMs).toBe(100);
    // sorted [50, 100, 200], rank 2 * 0.99 = 1.98: 100 + 0.98 * 100
    expect(m.p99TtftMs).toBeCloseTo(198, 10);
    expect(m.stdTtftMs).toBeCloseTo(Math.sqrt((16.6667 ** 2 + 66.6667 ** 2 + 83.3333 ** 2) / 3), 2);
  });

  it('computes TPOT as (E2E - TTFT) / (output_len - 1), skipping one-token outputs', () => {
    const tpots = [(170 - 100) / 3, (95 - 50) / 1];
    expect(m.meanTpotMs).toBeCloseTo((tpots[0]! + tpots[1]!) / 2, 10);
    expect(m.medianTpotMs).toBeCloseTo((tpots[0]! + tpots[1]!) / 2, 10);
    expect(m.p99TpotMs).toBeCloseTo(tpots[0]! + 0.99 * (tpots[1]! - tpots[0]!), 10);
  });

  it('pools the inter-token gaps of all requests', () => {
    expect(m.meanItlMs).toBeCloseTo(25, 10);
    expect(m.medianItlMs).toBeCloseTo(25, 10);
    // sorted [10, 20, 30, 40], rank 3 * 0.99 = 2.97: 30 + 0.97 * 10
    expect(m.p99ItlMs).toBeCloseTo(39.7, 10);
  });

  it('takes E2E latency statistics over successful requests', () => {
    expect(m.meanE2eLatencyMs).toBeCloseTo(155, 10);
    expect(m.medianE2eLatencyMs).toBe(170);
    expect(m.concurrency).toBeCloseTo((170 + 95 + 200) / 2000, 10);
  });
});

describe('metrics edge cases', () => {
  it('gives zero latency figures and NaN E2E when every request failed', () => {
    const failed = results.slice(3);
    const m = calculateMetrics(requests.slice(3), failed, 1000, wordTokenizer);
    expect(m.completed).toBe(0);
    expect(m.totalOutput).toBe(0);
    expect(m.outputThroughput).toBe(0);
    expect(m.medianTtftMs).toBe(0);
    expect(m.p99ItlMs).toBe(0);
    expect(m.medianE2eLatencyMs).toBeNaN();
  });

  it('interpolates percentiles between ranks', () => {
    expect(percentile([4, 1, 3, 2], 50)).toBe(2.5);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([0, 10], 90)).toBeCloseTo(9, 12);
  });
});
