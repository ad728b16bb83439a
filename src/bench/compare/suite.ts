import { UserError } from '../../errors.js';
import type { ClientBackend } from '../client-backends.js';
import { loadBenchRequests, type DatasetOptions } from '../datasets.js';
import type { BenchmarkMetrics } from '../metrics.js';
import { latencySamples } from '../metrics.js';
import { runBenchmark } from '../runner.js';
import { fetchServedModel, fetchServerInfo } from '../server-info.js';
import type { BenchTokenizer } from '../tokenizer.js';
import { pythonFloat } from '../report.js';
import type { BenchRequest } from '../types.js';
import type { EngineSpec } from './engines.js';
import { launchEngine, waitForHealth } from './launcher.js';

/** One benchmark of the seed's suite. */
export interface SuiteRun {
  kind: 'online' | 'offline';
  requestRate: number;
  numPrompts: number;
}

/** The seed's runs: online at 4 req/s x 1200 and 8 req/s x 2400, offline (rate inf) x 5000. */
export function seedSuite(scale: number): SuiteRun[] {
  if (!(scale > 0)) throw new UserError(`--scale ${scale} must be positive`);
  const count = (n: number) => Math.max(1, Math.round(n * scale));
  return [
    { kind: 'online', requestRate: 4, numPrompts: count(1200) },
    { kind: 'online', requestRate: 8, numPrompts: count(2400) },
    { kind: 'offline', requestRate: Infinity, numPrompts: count(5000) },
  ];
}

/** Latency distributions as 101 quantiles (0th to 100th percentile), ms. */
export interface Distributions {
  e2e: number[];
  ttft: number[];
  tpot: number[];
  itl: number[];
}

export interface RunResult extends SuiteRun {
  /** Set when the run could not be done at all (e.g. its warm-up request failed). */
  error?: string;
  durationS?: number;
  metrics?: BenchmarkMetrics;
  failures: Record<string, number>;
  /** One error message per failure reason. */
  failureExamples: Record<string, string>;
  distributions?: Distributions;
}

export interface EngineResult extends EngineSpec {
  model?: string;
  /** The engine's GET /get_server_info once it was up (SGLang and sluice; absent for engines without it). */
  serverInfo?: Record<string, unknown>;
  /** Set when the engine could not be started or reached. */
  error?: string;
  runs: RunResult[];
}

export interface SuiteSettings extends Omit<DatasetOptions, 'numPrompts'> {
  backend: ClientBackend;
  scale: number;
  tokenizer: string;
  stream: boolean;
  requestTimeoutS: number;
  stallTimeoutS: number;
  launchTimeoutS: number;
  maxConcurrency?: number;
}

export interface SuiteResults {
  createdAt: string;
  settings: SuiteSettings;
  runs: SuiteRun[];
  engines: EngineResult[];
}

export interface SuiteContext {
  tokenizer: BenchTokenizer;
  log(line: string): void;
  /** Called after each run (e.g. to print bench_serving's table). */
  onRun?(engine: EngineResult, run: RunResult): void;
}

/** Runs every engine through the suite, one engine at a time, launching and stopping each as asked. */
export async function runSuite(engines: EngineSpec[], settings: SuiteSettings, context: SuiteContext): Promise<SuiteResults> {
  const runs = seedSuite(settings.scale);
  const requestSets = loadRequestSets(runs, settings, context);
  const results: SuiteResults = { createdAt: new Date().toISOString(), settings, runs, engines: [] };
  for (const spec of engines) {
    const engine: EngineResult = { ...spec, runs: [] };
    results.engines.push(engine);
    const launched = spec.launch ? launchEngine(spec.launch) : null;
    // Ctrl-C or a kill must not leave a launched engine running.
    const stopOnInterrupt = () => {
      if (launched) void launched.stop().finally(() => process.exit(130));
      else process.exit(130);
    };
    process.once('SIGINT', stopOnInterrupt);
    process.once('SIGTERM', stopOnInterrupt);
    try {
      if (launched) context.log(`[${spec.name}] launching: ${spec.launch}`);
      await waitForHealth(spec.url, (launched ? settings.launchTimeoutS : 30) * 1000, launched?.exited);
      engine.model = await fetchServedModel(spec.url);
      const serverInfo = await fetchServerInfo(spec.url);
      if (serverInfo) engine.serverInfo = serverInfo;
      const tp = typeof serverInfo?.tp_size === 'number' ? ` (tp_size ${serverInfo.tp_size})` : '';
      context.log(`[${spec.name}] ${spec.url} is up, serving ${engine.model}${tp}`);
      for (const run of runs) {
        context.log(`[${spec.name}] request rate ${pythonFloat(run.requestRate)}, ${run.numPrompts} prompts`);
        const result = await runOne(spec, engine.model, run, requestSets.get(run.numPrompts)!, settings, context);
        engine.runs.push(result);
        context.onRun?.(engine, result);
      }
    } catch (e) {
      const tail = launched?.outputTail();
      engine.error = (e as Error).message + (tail ? `\n--- last output of the launch command ---\n${tail}` : '');
      context.log(`[${spec.name}] failed: ${(e as Error).message}`);
    } finally {
      process.removeListener('SIGINT', stopOnInterrupt);
      process.removeListener('SIGTERM', stopOnInterrupt);
      if (launched) {
        context.log(`[${spec.name}] stopping`);
        await launched.stop();
      }
    }
  }
  return results;
}

/** The same prompts for every engine; ShareGPT sets are prefixes of one seeded sample. */
function loadRequestSets(runs: SuiteRun[], settings: SuiteSettings, context: SuiteContext): Map<number, BenchRequest[]> {
  const sets = new Map<number, BenchRequest[]>();
  const counts = [...new Set(runs.map((r) => r.numPrompts))];
  if (settings.datasetName === 'sharegpt') {
    const all = loadBenchRequests({ ...settings, numPrompts: Math.max(...counts) }, context.tokenizer, context.log);
    for (const n of counts) sets.set(n, all.slice(0, n));
  } else {
    for (const n of counts) sets.set(n, loadBenchRequests({ ...settings, numPrompts: n }, context.tokenizer, context.log));
  }
  return sets;
}

async function runOne(
  spec: EngineSpec,
  model: string,
  run: SuiteRun,
  requests: BenchRequest[],
  settings: SuiteSettings,
  context: SuiteContext,
): Promise<RunResult> {
  try {
    const outcome = await runBenchmark({
      backend: settings.backend,
      baseUrl: spec.url,
      model,
      tokenizer: context.tokenizer,
      requests,
      requestRate: run.requestRate,
      maxConcurrency: settings.maxConcurrency,
      seed: settings.seed,
      stream: settings.stream,
      ignoreEos: true,
      extraBody: {},
      apiKey: process.env.OPENAI_API_KEY || undefined,
      timeoutMs: settings.requestTimeoutS * 1000,
      stallTimeoutMs: settings.stallTimeoutS * 1000,
      showProgress: process.stderr.isTTY === true,
      log: context.log,
    });
    const failureExamples: Record<string, string> = {};
    for (const r of outcome.results) {
      if (!r.success) failureExamples[r.failureReason ?? 'error'] ??= r.error.slice(0, 500);
    }
    const samples = latencySamples(outcome.results);
    return {
      ...run,
      durationS: outcome.durationMs / 1000,
      metrics: outcome.metrics,
      failures: outcome.failures,
      failureExamples,
      distributions: { e2e: quantiles(samples.e2e), ttft: quantiles(samples.ttft), tpot: quantiles(samples.tpot), itl: quantiles(samples.itl) },
    };
  } catch (e) {
    return { ...run, error: (e as Error).message, failures: {}, failureExamples: {} };
  }
}

/** The 0th, 1st, ..., 100th percentiles (nearest rank); empty for no samples. */
export function quantiles(values: number[]): number[] {
  if (values.length === 0) return [];
  const sorted = Float64Array.from(values).sort();
  return Array.from({ length: 101 }, (_, p) => sorted[Math.round((p / 100) * (sorted.length - 1))]!);
}
