import http from 'node:http';
import cliProgress from 'cli-progress';
import { UserError } from '../errors.js';
import { arrivalGaps, paced } from './arrivals.js';
import { sendRequest, type ClientBackend, type RequestSettings } from './client-backends.js';
import { calculateMetrics, type BenchmarkMetrics } from './metrics.js';
import { SeededRandom } from './seeded-random.js';
import type { BenchTokenizer } from './tokenizer.js';
import type { BenchRequest, RequestResult } from './types.js';

export interface BenchmarkConfig extends Omit<RequestSettings, 'agent'> {
  backend: ClientBackend;
  tokenizer: BenchTokenizer;
  requests: BenchRequest[];
  requestRate: number;
  /** At most this many requests in flight (arrivals keep their schedule and wait for a slot). */
  maxConcurrency?: number;
  /** Seeds the arrival intervals. */
  seed: number;
  showProgress: boolean;
  log(line: string): void;
}

export interface BenchmarkRun {
  durationMs: number;
  metrics: BenchmarkMetrics;
  results: RequestResult[];
  /** Failed requests counted by reason. */
  failures: Record<string, number>;
}

/** The arrival generator's seed, kept apart from the dataset shuffle's stream. */
export function arrivalSeed(seed: number): number {
  return (seed * 2 + 1) >>> 0;
}

/**
 * bench_serving v0.3.0's benchmark(): one warm-up request (the first prompt) must succeed, then
 * every request is sent on the Poisson schedule and the run is timed from before the first send
 * to the end of the last request.
 */
export async function runBenchmark(config: BenchmarkConfig): Promise<BenchmarkRun> {
  if (config.requests.length === 0) throw new UserError('the dataset gave no requests to send');
  const agent = new http.Agent({ keepAlive: true });
  const settings: RequestSettings = { ...config, agent };
  try {
    config.log('Starting initial single prompt test run...');
    const warmUp = await sendRequest(config.backend, config.requests[0]!, settings);
    if (!warmUp.success) {
      throw new UserError(`Initial test run failed - Please make sure benchmark arguments are correctly specified. Error: ${warmUp.error}`);
    }
    config.log('Initial test run completed. Starting main benchmark run...');

    const gaps = arrivalGaps(config.requests.length, config.requestRate, new SeededRandom(arrivalSeed(config.seed)));
    const progress = config.showProgress ? newProgressBar(config.requests.length) : null;
    const slots = config.maxConcurrency ? new Slots(config.maxConcurrency) : null;
    const send = async (request: BenchRequest) => {
      if (slots) await slots.acquire();
      try {
        return await sendRequest(config.backend, request, settings);
      } finally {
        slots?.release();
        progress?.increment();
      }
    };

    const start = performance.now();
    const pending: Promise<RequestResult>[] = [];
    for await (const request of paced(config.requests, gaps)) pending.push(send(request));
    const results = await Promise.all(pending);
    const durationMs = performance.now() - start;
    progress?.stop();

    const failures: Record<string, number> = {};
    for (const r of results) if (!r.success) failures[r.failureReason ?? 'error'] = (failures[r.failureReason ?? 'error'] ?? 0) + 1;
    const metrics = calculateMetrics(config.requests, results, durationMs, config.tokenizer);
    return { durationMs, metrics, results, failures };
  } finally {
    agent.destroy();
  }
}

function newProgressBar(total: number): cliProgress.SingleBar {
  const bar = new cliProgress.SingleBar(
    { format: '{bar} {percentage}% | {value}/{total} requests | {duration_formatted}', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return bar;
}

/** A counting semaphore. */
class Slots {
  private readonly waiting: (() => void)[] = [];

  constructor(private free: number) {}

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}
