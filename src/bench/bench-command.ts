import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UserError } from '../errors.js';
import type { ClientBackend } from './client-backends.js';
import { loadBenchRequests, type DatasetOptions } from './datasets.js';
import { formatFailures, formatResultTable, jsonlRecord } from './report.js';
import { runBenchmark, type BenchmarkRun } from './runner.js';
import { fetchServedModel, resolveBaseUrl } from './server-info.js';
import { shareGptMissingMessage } from './sharegpt.js';
import { resolveTokenizer } from './tokenizer.js';

/** The options of `sluice bench`, named as bench_serving's flags. */
export interface BenchOptions extends DatasetOptions {
  backend: ClientBackend;
  baseUrl?: string;
  host: string;
  port?: number;
  model?: string;
  tokenizer?: string;
  requestRate: number;
  multi?: boolean;
  requestRateRange: string;
  outputFile?: string;
  outputDetails?: string;
  disableTqdm?: boolean;
  disableStream?: boolean;
  disableIgnoreEos?: boolean;
  extraRequestBody?: string;
  maxConcurrency?: number;
  requestTimeout: number;
  stallTimeout: number;
}

/** `sluice bench`: bench_serving v0.3.0's main(), one rate or several with --multi. */
export async function benchCommand(options: BenchOptions, out: (text: string) => void = (t) => process.stdout.write(t)): Promise<BenchmarkRun[]> {
  const log = (line: string) => out(`${line}\n`);
  log(`${describeArgs(options)}\n`);
  const extraBody = parseExtraBody(options.extraRequestBody);
  if (options.datasetName === 'sharegpt' && (options.datasetPath === undefined || !existsSync(options.datasetPath))) {
    throw new UserError(shareGptMissingMessage(options.datasetPath));
  }
  const apiKey = process.env.OPENAI_API_KEY || undefined;
  const baseUrl = resolveBaseUrl(options);
  const model = options.model ?? (await fetchServedModel(baseUrl, apiKey));
  const tokenizer = resolveTokenizer(options.tokenizer ?? model, log);
  const requests = loadBenchRequests(options, tokenizer, log);
  const rates = options.multi ? parseRequestRateRange(options.requestRateRange) : [options.requestRate];
  const outputFile = options.outputFile ?? defaultOutputFileName(options);
  mkdirSync(dirname(outputFile), { recursive: true });
  const runs: BenchmarkRun[] = [];
  if (options.outputDetails) writeFileSync(options.outputDetails, '');
  for (const requestRate of rates) {
    log(`Traffic request rate: ${requestRate}`);
    const run = await runBenchmark({
      backend: options.backend,
      baseUrl,
      model,
      tokenizer,
      requests,
      requestRate,
      maxConcurrency: options.maxConcurrency,
      seed: options.seed,
      stream: !options.disableStream,
      ignoreEos: !options.disableIgnoreEos,
      extraBody,
      apiKey,
      timeoutMs: options.requestTimeout * 1000,
      stallTimeoutMs: options.stallTimeout * 1000,
      showProgress: !options.disableTqdm && process.stderr.isTTY === true,
      log,
    });
    out(formatResultTable(options.backend, requestRate, run.durationMs, run.metrics));
    out(formatFailures(run.failures));
    const record = jsonlRecord(
      {
        backend: options.backend,
        datasetName: options.datasetName,
        requestRate,
        sharegptOutputLen: options.sharegptOutputLen ?? null,
        randomInputLen: options.randomInputLen,
        randomOutputLen: options.randomOutputLen,
        randomRangeRatio: options.randomRangeRatio,
      },
      run.durationMs,
      run.metrics,
    );
    appendFileSync(outputFile, `${JSON.stringify(record)}\n`);
    if (options.outputDetails) writeDetails(options.outputDetails, requestRate, run);
    runs.push(run);
  }
  return runs;
}

function parseExtraBody(text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UserError(`--extra-request-body is not JSON: ${text}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new UserError('--extra-request-body must be a JSON object');
  return value as Record<string, unknown>;
}

/** "start,stop,step" is a range (stop excluded); any other list is taken as the rates themselves. */
export function parseRequestRateRange(text: string): number[] {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.some((n) => !Number.isFinite(n) || n <= 0)) throw new UserError(`--request-rate-range ${text}: give positive numbers`);
  if (parts.length !== 3) return parts;
  const [start, stop, step] = parts as [number, number, number];
  const rates: number[] = [];
  for (let r = start; r < stop; r += step) rates.push(r);
  return rates;
}

/** Where results go without --output-file: an ignored folder, so runs never litter the repository. */
export const defaultResultsDir = 'bench-results';

function defaultOutputFileName(options: BenchOptions): string {
  const now = new Date();
  const mmdd = `${String(now.getMonth() + 1).padStart(2, '0')}${String(now.getDate()).padStart(2, '0')}`;
  const name =
    options.datasetName === 'random'
      ? `${options.backend}_${mmdd}_${options.numPrompts}_${options.randomInputLen}_${options.randomOutputLen}.jsonl`
      : `${options.backend}_${mmdd}_${options.numPrompts}_sharegpt.jsonl`;
  return join(defaultResultsDir, name);
}

function writeDetails(file: string, requestRate: number, run: BenchmarkRun): void {
  const lines = run.results.map((r, index) =>
    JSON.stringify({
      request_rate: Number.isFinite(requestRate) ? requestRate : 'inf',
      index,
      success: r.success,
      prompt_len: r.promptLen,
      output_len: r.outputLen,
      ttft_ms: r.ttft,
      latency_ms: r.latency,
      itl_ms: r.itl,
      generated_text: r.generatedText,
      failure_reason: r.failureReason ?? null,
      error: r.error,
    }),
  );
  appendFileSync(file, `${lines.join('\n')}\n`);
}

/** The run's settings on one line, as bench_serving prints its argparse Namespace. */
function describeArgs(options: BenchOptions): string {
  const fields = Object.entries(options).map(([key, value]) => {
    const name = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    const shown = typeof value === 'number' && !Number.isFinite(value) ? 'inf' : JSON.stringify(value);
    return `${name}=${shown}`;
  });
  return `Namespace(${fields.join(', ')})`;
}
