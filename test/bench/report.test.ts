import { describe, expect, it } from 'vitest';
import { renderHtmlReport } from '../../src/bench/compare/html-report.js';
import type { EngineResult, RunResult, SuiteResults } from '../../src/bench/compare/suite.js';
import { quantiles, seedSuite } from '../../src/bench/compare/suite.js';
import { formatMarkdownTable, offlineTable, onlineTable } from '../../src/bench/compare/tables.js';
import { calculateMetrics } from '../../src/bench/metrics.js';
import { centre, formatResultTable, jsonlFields, jsonlRecord } from '../../src/bench/report.js';
import type { RequestResult } from '../../src/bench/types.js';
import { wordTokenizer } from '../support/word-tokenizer.js';

const result = (ttft: number, latency: number, outputLen = 3): RequestResult => ({
  success: true,
  generatedText: 'a b c',
  promptLen: 5,
  outputLen,
  ttft,
  itl: [10, 20],
  latency,
  error: '',
});

function run(kind: 'online' | 'offline', requestRate: number, numPrompts: number, scale: number): RunResult {
  const results = [result(10 * scale, 100 * scale), result(20 * scale, 200 * scale)];
  const metrics = calculateMetrics(
    results.map(() => ({ prompt: '', promptLen: 5, outputLen: 3 })),
    results,
    1000 * scale,
    wordTokenizer,
  );
  return {
    kind,
    requestRate,
    numPrompts,
    metrics,
    durationS: scale,
    failures: scale === 2 ? { 'HTTP 500': 3 } : {},
    failureExamples: scale === 2 ? { 'HTTP 500': 'HTTP 500 Internal Server Error: <boom>' } : {},
    distributions: { e2e: quantiles([100 * scale, 200 * scale]), ttft: quantiles([10, 20]), tpot: [], itl: quantiles([10, 20]) },
  };
}

function suite(): SuiteResults {
  const runs = seedSuite(0.01);
  const engine = (name: string, scale: number): EngineResult => ({
    name,
    url: `http://127.0.0.1/${name}`,
    runs: runs.map((r) => run(r.kind, r.requestRate, r.numPrompts, scale)),
  });
  return {
    createdAt: '2026-01-01T00:00:00Z',
    settings: {
      backend: 'sluice',
      scale: 0.01,
      tokenizer: 'tiny',
      stream: true,
      requestTimeoutS: 1,
      stallTimeoutS: 1,
      launchTimeoutS: 1,
      datasetName: 'sharegpt',
      randomInputLen: 1,
      randomOutputLen: 1,
      randomRangeRatio: 0,
      seed: 1,
    },
    runs,
    engines: [engine('fast', 1), engine('slow', 2), { name: 'dead', url: 'http://x', error: 'did not start\n<details>', runs: [] }],
  };
}

describe('bench_serving result table', () => {
  it('prints v0.3.0 field names under 50-character banners', () => {
    const m = calculateMetrics([{ prompt: '', promptLen: 5, outputLen: 3 }], [result(10, 100)], 2000, wordTokenizer);
    const text = formatResultTable('sluice', Infinity, 2000, m);
    const lines = text.split('\n');
    expect(lines[1]).toBe('============ Serving Benchmark Result ============');
    expect(lines[1]).toHaveLength(50);
    expect(centre('Time to First Token', 50, '-')).toBe('---------------Time to First Token----------------');
    expect(lines.at(-2)).toBe('='.repeat(50));
    expect(text).toContain('Backend:                                 sluice    \n');
    expect(text).toContain('Traffic request rate:                    inf       \n');
    expect(text).toContain('Benchmark duration (s):                  2.00      \n');
    expect(text).toContain('Median E2E Latency (ms):                 100.00    \n');
    for (const label of [
      'Successful requests:',
      'Total input tokens:',
      'Total generated tokens:',
      'Total generated tokens (retokenized):',
      'Request throughput (req/s):',
      'Input token throughput (tok/s):',
      'Output token throughput (tok/s):',
      'Mean E2E Latency (ms):',
      'Mean TTFT (ms):',
      'Median TTFT (ms):',
      'P99 TTFT (ms):',
      'Mean TPOT (ms):',
      'Median TPOT (ms):',
      'P99 TPOT (ms):',
      'Mean ITL (ms):',
      'Median ITL (ms):',
      'P99 ITL (ms):',
    ]) {
      expect(lines.some((l) => l.startsWith(label.padEnd(40)))).toBe(true);
    }
    expect(formatResultTable('x', 4, 1000, m)).toContain('Traffic request rate:                    4.0');
  });

  it('writes every v0.3.0 JSONL field, and inf as a string', () => {
    const m = calculateMetrics([{ prompt: '', promptLen: 5, outputLen: 3 }], [result(10, 100)], 2000, wordTokenizer);
    const record = jsonlRecord(
      { backend: 'vllm', datasetName: 'random', requestRate: Infinity, sharegptOutputLen: null, randomInputLen: 8, randomOutputLen: 4, randomRangeRatio: 0.5 },
      2000,
      m,
    );
    expect(Object.keys(record)).toEqual([...jsonlFields]);
    expect(JSON.parse(JSON.stringify(record))).toMatchObject({ request_rate: 'inf', duration: 2, completed: 1, total_output_tokens: 3 });
  });
});

describe('compare tables and report', () => {
  it('lays out the seed suite, scaled', () => {
    expect(seedSuite(1)).toEqual([
      { kind: 'online', requestRate: 4, numPrompts: 1200 },
      { kind: 'online', requestRate: 8, numPrompts: 2400 },
      { kind: 'offline', requestRate: Infinity, numPrompts: 5000 },
    ]);
    expect(seedSuite(0.01).map((r) => r.numPrompts)).toEqual([12, 24, 50]);
  });

  it("prints the seed's online and offline tables with engines as rows and ratio rows", () => {
    const results = suite();
    const online = onlineTable(results);
    expect(online.header).toEqual(['RPS', 'Num prompts', 'Engine', 'Median E2E Latency', 'Median TTFT', 'Median TPOT', 'Median ITL']);
    expect(online.rows.map((r) => r.cells.slice(0, 3))).toEqual([
      ['4', '12', 'fast'],
      ['4', '12', 'slow'],
      ['4', '12', 'dead'],
      ['4', '12', 'slow / fast'],
      ['4', '12', 'dead / fast'],
      ['8', '24', 'fast'],
      ['8', '24', 'slow'],
      ['8', '24', 'dead'],
      ['8', '24', 'slow / fast'],
      ['8', '24', 'dead / fast'],
    ]);
    // slow has twice the latencies of fast: median E2E 150 vs 300.
    expect(online.rows[0]!.cells[3]).toBe('150.00');
    expect(online.rows[1]!.cells[3]).toBe('300.00');
    expect(online.rows[3]!.cells[3]).toBe('2.00x');
    expect(online.rows[4]!.cells.slice(3)).toEqual(['-', '-', '-', '-']);
    const offline = offlineTable(results);
    expect(offline.header).toEqual(['RPS', 'Num prompts', 'Engine', 'Request throughput', 'Output token throughput']);
    // 2 requests in 1 s (fast) and in 2 s (slow).
    expect(offline.rows.map((r) => r.cells)).toContainEqual(['inf', '50', 'fast', '2.00', '6.00']);
    expect(offline.rows.map((r) => r.cells)).toContainEqual(['inf', '50', 'slow / fast', '0.50x', '0.50x']);
    const text = formatMarkdownTable(offline);
    expect(text.split('\n')[0]).toMatch(/^\| RPS \| Num prompts \| Engine +\| Request throughput \| Output token throughput \|$/);
  });

  it('writes one self-contained HTML page with charts and failures', () => {
    const html = renderHtmlReport(suite());
    // Nothing that could load a resource: no scripts, links, sources, CSS urls or imports.
    expect(/<script|<link|<img|<iframe|\ssrc=|\shref=|url\(|@import/i.test(html)).toBe(false);
    expect(html).toContain(`content="default-src 'none'; style-src 'unsafe-inline'"`);
    expect(html.match(/<svg class="chart"/g)).toHaveLength(4 + 4 + 6);
    expect(html.match(/<polyline class="series" data-engine="fast"/g)!.length).toBeGreaterThanOrEqual(9);
    expect(html.match(/<rect class="bar"/g)).toHaveLength(2 * 3);
    expect(html.match(/<table class="metrics">/g)).toHaveLength(3);
    expect(html).toContain('<tr><td>fast</td><td>2</td><td>0</td><td>2.00</td><td>6.00</td><td>150.00</td>');
    expect(html).toContain('3 x HTTP 500');
    expect(html).toContain('HTTP 500 Internal Server Error: &lt;boom&gt;');
    expect(html).toContain('did not start');
  });
});
