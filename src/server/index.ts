import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { LoadedModel } from '../model/load.js';
import { buildApp } from './app.js';
import type { ServedEngine, ServerContext } from './context.js';
import { createLogger, type Logger } from './http/logger.js';
import { ServerMetrics } from './http/metrics.js';
import type { KvEventPublisher } from './kv-events-publisher.js';
import { PromptEncoder } from './prompt-encoder.js';
import { TokenText } from './protocol/token-text.js';
import { defaultWedgeTimeoutMs } from './routes/health.js';
import { defaultHttpSettings, type HttpSettings } from './http/settings.js';

export type { ServedEngine } from './context.js';
export { createLogger, logLevels, silentLogger, type Logger, type LogLevel } from './http/logger.js';
export { defaultWedgeTimeoutMs } from './routes/health.js';
export { defaultHttpSettings, type HttpSettings } from './http/settings.js';
export { defaultKvEventsBufferSteps, defaultKvEventsTopic, KvEventPublisher, type KvEventsConfig } from './kv-events-publisher.js';

export interface ServerOptions {
  engine: ServedEngine;
  model: LoadedModel;
  /** The name /v1/models lists and requests may use; the model's name by default. */
  servedModelName?: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  apiKey?: string | null;
  log?: Logger;
  /** One log line per finished request. */
  logRequests?: boolean;
  wedgeTimeoutMs?: number;
  /** Timeouts, CORS, request timeout and log format (defaults: defaultHttpSettings). */
  http?: Partial<HttpSettings>;
  /** The KV-event publisher the engine was given; the server reports it and closes it on shutdown. */
  kvEvents?: KvEventPublisher | null;
  /** Tensor-parallel ranks behind the engine (reported by /server_info; default 1). */
  tpSize?: number;
  /** Long prompt texts are tokenized in a thread of their own, off the HTTP thread (with `--engine-thread worker`). */
  tokenizerThread?: boolean;
  /** A streamed choice is sent every this many tokens, its first and last at once (`--stream-interval`; default 1: every token). */
  streamInterval?: number;
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly app: FastifyInstance;
  readonly context: ServerContext;
  /**
   * Stops accepting requests, lets in-flight ones finish (aborting them after `timeoutMs`), then
   * closes the engine. Resolves when everything is down.
   */
  shutdown(timeoutMs?: number): Promise<void>;
}

export const defaultDrainTimeoutMs = 30_000;

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const engine = options.engine;
  const log = options.log ?? createLogger('info');
  const servedModelName = options.servedModelName ?? options.model.name;
  const streamInterval = options.streamInterval ?? 1;
  if (!(Number.isInteger(streamInterval) && streamInterval >= 1)) throw new Error(`streamInterval ${streamInterval}: give a whole number of tokens, 1 or more`);
  const ctx: ServerContext = {
    engine,
    model: options.model,
    servedModelName,
    contextLength: engine.contextLength,
    metrics: new ServerMetrics(() => engine.stats(), { modelName: servedModelName, maxModelLen: engine.contextLength }),
    log,
    logRequests: options.logRequests ?? true,
    tokenText: new TokenText(options.model.tokenizer),
    inFlight: new Set(),
    busySince: Date.now(),
    wedgeTimeoutMs: options.wedgeTimeoutMs ?? defaultWedgeTimeoutMs,
    draining: false,
    http: { ...defaultHttpSettings, ...definedOnly(options.http ?? {}) },
    kvEvents: options.kvEvents ?? null,
    tpSize: options.tpSize ?? 1,
    streamInterval,
    prompts: new PromptEncoder(options.model.tokenizer, { thread: options.tokenizerThread ?? false }),
  };
  const app = buildApp(ctx, { apiKey: options.apiKey ?? null, version: packageVersion() });
  const host = options.host ?? '127.0.0.1';
  // The benchmark's offline rows open thousands of connections at once; Node's default backlog (511) resets some.
  await app.listen({ host, port: options.port ?? 30000, backlog: 4096 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? 30000);
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let shuttingDown: Promise<void> | null = null;
  return {
    url,
    port,
    app,
    context: ctx,
    shutdown(timeoutMs = defaultDrainTimeoutMs) {
      shuttingDown ??= shutdown(ctx, app, timeoutMs);
      return shuttingDown;
    },
  };
}

/**
 * Draining keeps the listener open until the last request in flight has ended, so probes get an
 * answer (/readiness 503, /health 200) and new generation requests a retryable 503 rather than a
 * refused connection; only then does the server stop listening.
 */
async function shutdown(ctx: ServerContext, app: FastifyInstance, timeoutMs: number): Promise<void> {
  ctx.draining = true;
  const pending = ctx.inFlight.size;
  if (pending > 0) ctx.log.info(`draining: waiting up to ${(timeoutMs / 1000).toFixed(0)} s for ${pending} requests in flight`);
  // Keep-alive clients reconnect for their next request (every answer while draining closes its connection).
  app.server.closeIdleConnections();
  const drained = await inFlightEnded(ctx, timeoutMs);
  if (!drained) {
    ctx.log.warn(`drain timeout: aborting ${ctx.inFlight.size} requests still in flight`);
    for (const request of ctx.inFlight) request.abort();
  }
  const closed = app.close();
  if (!drained) {
    const grace = setTimeout(() => app.server.closeAllConnections(), 2000);
    closed.finally(() => clearTimeout(grace)).catch(() => {});
  }
  await closed;
  await ctx.engine.drain();
  await ctx.engine.close();
  await ctx.kvEvents?.close();
  await ctx.prompts.close();
}

const drainPollMs = 20;

/** True once no request is in flight, false when `timeoutMs` passed first. */
async function inFlightEnded(ctx: ServerContext, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (ctx.inFlight.size > 0) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(drainPollMs, Math.max(1, deadline - Date.now()))));
  }
  return true;
}

function packageVersion(): string {
  try {
    return JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
