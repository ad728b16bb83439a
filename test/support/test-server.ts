import type { Backend } from '../../src/engine/backend.js';
import { createBackend } from '../../backends/index.js';
import { LlmEngine } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/options.js';
import { loadModel } from '../../src/model/load.js';
import { KvEventPublisher, silentLogger, startServer, type RunningServer } from '../../src/server/index.js';
import { InstantBackend } from './instant-backend.js';
import { parsePrometheusText, samplesByKey } from './prometheus-text.js';

export interface TestServerOptions {
  apiKey?: string;
  engine?: Partial<EngineOptions>;
  /** Wraps the ref backend (to make it fail or stall). */
  wrapBackend?: (backend: Backend) => Backend;
  /** Serve on the instant backend (no model compute) instead of ref: for tests about the engine and server only. */
  instant?: boolean;
  wedgeTimeoutMs?: number;
  servedModelName?: string;
  /** Publish KV events on this ZeroMQ endpoint (e.g. tcp://127.0.0.1:*), in blocks of blockSize tokens. */
  kvEvents?: { endpoint: string; blockSize: number };
}

/** A server on the tiny preset and the ref backend, on a free port, logging nothing. */
export async function startTestServer(options: TestServerOptions = {}): Promise<RunningServer> {
  const model = loadModel({ modelPath: 'tiny' });
  const base = options.instant ? new InstantBackend() : await createBackend('ref');
  const backend = options.wrapBackend ? options.wrapBackend(base) : base;
  const name = options.servedModelName ?? model.name;
  const kvEvents = options.kvEvents ? await KvEventPublisher.open({ ...options.kvEvents, topic: `kv@127.0.0.1@${name}` }) : null;
  const engine = await LlmEngine.create(model, backend, {
    maxTotalTokens: 16384,
    logger: silentLogger,
    kvEvents: kvEvents && { blockSize: kvEvents.config.blockSize, sink: kvEvents.publish },
    ...options.engine,
  });
  return startServer({ engine, model, port: 0, log: silentLogger, apiKey: options.apiKey ?? null, wedgeTimeoutMs: options.wedgeTimeoutMs, servedModelName: name, kvEvents });
}

/** Parses /metrics into name{labels} -> value (labels other than model_name, in the order served). */
export async function scrapeMetrics(url: string): Promise<Map<string, number>> {
  return samplesByKey(parsePrometheusText(await (await fetch(`${url}/metrics`)).text()));
}

export async function waitFor(condition: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** No request holds KV: the prefix cache is flushed (only possible when idle) and no page is in use. */
export async function expectKvFree(url: string, headers: Record<string, string> = {}): Promise<void> {
  await waitFor(async () => (await fetch(`${url}/flush_cache`, { method: 'POST', headers })).status === 200, 'the engine to go idle');
  const metrics = await scrapeMetrics(url);
  if (metrics.get('sluice:kv_cache_pages_used') !== 0) throw new Error(`KV pages still in use: ${metrics.get('sluice:kv_cache_pages_used')}`);
  if (metrics.get('sluice:kv_cache_pages_cached') !== 0) throw new Error(`KV pages still cached: ${metrics.get('sluice:kv_cache_pages_cached')}`);
  if (metrics.get('vllm:num_requests_running') !== 0 || metrics.get('vllm:num_requests_waiting') !== 0) {
    throw new Error('requests still running or waiting');
  }
}

/** Reads an SSE body into its `data:` payloads (the last being "[DONE]"). */
export async function readEvents(response: Response): Promise<string[]> {
  const text = await response.text();
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '')
    .map((block) => {
      if (!block.startsWith('data: ')) throw new Error(`not an SSE data event: ${JSON.stringify(block)}`);
      return block.slice('data: '.length);
    });
}

/** A response's JSON body, untyped (tests check its shape). */
export async function json(response: Response | Promise<Response>): Promise<any> {
  return (await response).json();
}
