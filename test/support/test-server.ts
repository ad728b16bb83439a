import type { Backend } from '../../src/engine/backend.js';
import { createBackend } from '../../backends/index.js';
import { LlmEngine } from '../../src/engine/engine.js';
import type { EngineOptions } from '../../src/engine/options.js';
import { createBackendFromRecipe, type BackendRecipe } from '../../src/engine/worker/backend-recipe.js';
import { WorkerEngine } from '../../src/engine/worker/worker-engine.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { KvEventPublisher, silentLogger, startServer, type HttpSettings, type Logger, type RunningServer } from '../../src/server/index.js';
import { parsePrometheusText, samplesByKey } from './prometheus-text.js';

export type EngineThread = 'main' | 'worker';

/** Where test servers run their engine: SLUICE_TEST_ENGINE_THREAD=worker runs every server suite against the engine thread. */
export const testEngineThread: EngineThread = process.env.SLUICE_TEST_ENGINE_THREAD === 'worker' ? 'worker' : 'main';

const instantRecipe: BackendRecipe = { kind: 'module', module: new URL('./worker-backends.ts', import.meta.url).href, factory: 'instant', args: [] };

export interface TestServerOptions {
  apiKey?: string;
  engine?: Partial<Omit<EngineOptions, 'logger'>>;
  /** Wraps the ref backend (to make it fail or stall); main-thread engines only (a function cannot cross threads: use `backend`). */
  wrapBackend?: (backend: Backend) => Backend;
  /** Serve on the instant backend (no model compute) instead of ref: for tests about the engine and server only. */
  instant?: boolean;
  /** The backend, as a recipe either thread can follow (test/support/worker-backends.ts); the ref backend when absent. */
  backend?: BackendRecipe;
  wedgeTimeoutMs?: number;
  servedModelName?: string;
  /** Publish KV events on this ZeroMQ endpoint (e.g. tcp://127.0.0.1:*), in blocks of blockSize tokens; a replay socket when replayEndpoint is given. */
  kvEvents?: { endpoint: string; blockSize: number; replayEndpoint?: string; bufferSteps?: number };
  engineThread?: EngineThread;
  log?: Logger;
  /** Timeouts, CORS, request timeout, log format. */
  http?: Partial<HttpSettings>;
  /** Request log lines (off by default; they go to `log`). */
  logRequests?: boolean;
  /** The model the server describes and a main-thread engine runs (the tiny preset when absent; a worker engine still loads tiny). */
  model?: LoadedModel;
  /** As `sluice serve --stream-interval`. */
  streamInterval?: number;
}

/** A server on the tiny preset and the ref backend, on a free port, logging nothing. */
export async function startTestServer(options: TestServerOptions = {}): Promise<RunningServer> {
  const model = options.model ?? loadModel({ modelPath: 'tiny' });
  const log = options.log ?? silentLogger;
  const name = options.servedModelName ?? model.name;
  const kvEvents = options.kvEvents ? await KvEventPublisher.open({ ...options.kvEvents, topic: `kv@127.0.0.1@${name}` }) : null;
  const engineOptions = {
    maxTotalTokens: 16384,
    kvEvents: kvEvents && { blockSize: kvEvents.config.blockSize, sink: kvEvents.publish },
    ...options.engine,
  };
  const thread = options.engineThread ?? testEngineThread;
  const recipe: BackendRecipe | undefined = options.instant ? instantRecipe : options.backend;
  let engine: LlmEngine | WorkerEngine;
  if (thread === 'worker') {
    if (options.wrapBackend) throw new Error('wrapBackend needs a main-thread engine; give a backend recipe instead');
    const backend = recipe ?? { kind: 'flags', flags: { backend: 'ref' } };
    engine = await WorkerEngine.start({ model, load: { modelPath: 'tiny' }, backend, engine: engineOptions, logger: log });
  } else {
    const base = recipe ? await createBackendFromRecipe(recipe) : await createBackend('ref');
    const backend = options.wrapBackend ? options.wrapBackend(base) : base;
    engine = await LlmEngine.create(model, backend, { ...engineOptions, logger: log });
  }
  return startServer({
    engine,
    model,
    port: 0,
    log,
    logRequests: options.logRequests ?? false,
    apiKey: options.apiKey ?? null,
    wedgeTimeoutMs: options.wedgeTimeoutMs,
    servedModelName: name,
    kvEvents,
    tokenizerThread: thread === 'worker',
    http: options.http,
    streamInterval: options.streamInterval,
  });
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
