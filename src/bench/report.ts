import type { BenchmarkMetrics } from './metrics.js';

/** Python's str.format centring: the extra fill character goes to the right. */
export function centre(text: string, width: number, fill: string): string {
  const pad = Math.max(0, width - text.length);
  const left = Math.floor(pad / 2);
  return fill.repeat(left) + text + fill.repeat(pad - left);
}

/** How Python prints a float: 4 -> "4.0", Infinity -> "inf", NaN -> "nan". */
export function pythonFloat(value: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (value === Infinity) return 'inf';
  if (value === -Infinity) return '-inf';
  return Number.isInteger(value) ? value.toFixed(1) : String(value);
}

function fixed2(value: number): string {
  if (!Number.isFinite(value)) return pythonFloat(value);
  return value.toFixed(2);
}

/** The result table exactly as bench_serving v0.3.0 prints it. */
export function formatResultTable(backend: string, requestRate: number, durationMs: number, m: BenchmarkMetrics): string {
  const row = (label: string, value: string) => `${label.padEnd(40)} ${value.padEnd(10)}`;
  const lines = [
    '',
    centre(' Serving Benchmark Result ', 50, '='),
    row('Backend:', backend),
    row('Traffic request rate:', pythonFloat(requestRate)),
    row('Successful requests:', String(m.completed)),
    row('Benchmark duration (s):', fixed2(durationMs / 1000)),
    row('Total input tokens:', String(m.totalInput)),
    row('Total generated tokens:', String(m.totalOutput)),
    row('Total generated tokens (retokenized):', String(m.totalOutputRetokenized)),
    row('Request throughput (req/s):', fixed2(m.requestThroughput)),
    row('Input token throughput (tok/s):', fixed2(m.inputThroughput)),
    row('Output token throughput (tok/s):', fixed2(m.outputThroughput)),
    centre('End-to-End Latency', 50, '-'),
    row('Mean E2E Latency (ms):', fixed2(m.meanE2eLatencyMs)),
    row('Median E2E Latency (ms):', fixed2(m.medianE2eLatencyMs)),
    centre('Time to First Token', 50, '-'),
    row('Mean TTFT (ms):', fixed2(m.meanTtftMs)),
    row('Median TTFT (ms):', fixed2(m.medianTtftMs)),
    row('P99 TTFT (ms):', fixed2(m.p99TtftMs)),
    centre('Time per Output Token (excl. 1st token)', 50, '-'),
    row('Mean TPOT (ms):', fixed2(m.meanTpotMs)),
    row('Median TPOT (ms):', fixed2(m.medianTpotMs)),
    row('P99 TPOT (ms):', fixed2(m.p99TpotMs)),
    centre('Inter-token Latency', 50, '-'),
    row('Mean ITL (ms):', fixed2(m.meanItlMs)),
    row('Median ITL (ms):', fixed2(m.medianItlMs)),
    row('P99 ITL (ms):', fixed2(m.p99ItlMs)),
    '='.repeat(50),
  ];
  return lines.join('\n') + '\n';
}

/** A summary of failures by reason, printed after the table when any request failed. */
export function formatFailures(failures: Record<string, number>): string {
  const entries = Object.entries(failures);
  if (entries.length === 0) return '';
  const total = entries.reduce((a, [, n]) => a + n, 0);
  return `Failed requests: ${total} (${entries.map(([reason, n]) => `${reason}: ${n}`).join(', ')})\n`;
}

export interface RunDescription {
  backend: string;
  datasetName: string;
  requestRate: number;
  sharegptOutputLen: number | null;
  randomInputLen: number;
  randomOutputLen: number;
  randomRangeRatio: number;
}

/**
 * The --output-file line of v0.3.0, field for field. JSON has no infinity, so an infinite
 * request rate is written as the string "inf" (Python's json would write a bare Infinity).
 */
export function jsonlRecord(run: RunDescription, durationMs: number, m: BenchmarkMetrics): Record<string, unknown> {
  return {
    backend: run.backend,
    dataset_name: run.datasetName,
    request_rate: Number.isFinite(run.requestRate) ? run.requestRate : 'inf',
    total_input_tokens: m.totalInput,
    total_output_tokens: m.totalOutput,
    total_output_tokens_retokenized: m.totalOutputRetokenized,
    mean_e2e_latency_ms: m.meanE2eLatencyMs,
    median_e2e_latency_ms: m.medianE2eLatencyMs,
    median_ttft_ms: m.medianTtftMs,
    median_itl_ms: m.medianItlMs,
    output_throughput: m.outputThroughput,
    sharegpt_output_len: run.sharegptOutputLen,
    random_input_len: run.randomInputLen,
    random_output_len: run.randomOutputLen,
    random_range_ratio: run.randomRangeRatio,
    duration: durationMs / 1000,
    completed: m.completed,
  };
}

export const jsonlFields = [
  'backend',
  'dataset_name',
  'request_rate',
  'total_input_tokens',
  'total_output_tokens',
  'total_output_tokens_retokenized',
  'mean_e2e_latency_ms',
  'median_e2e_latency_ms',
  'median_ttft_ms',
  'median_itl_ms',
  'output_throughput',
  'sharegpt_output_len',
  'random_input_len',
  'random_output_len',
  'random_range_ratio',
  'duration',
  'completed',
] as const;
