import { existsSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { LlmEngine } from '../engine/engine.js';
import { WorkerEngine } from '../engine/worker/worker-engine.js';
import { defaultMaxTokens } from '../engine/request-parameters.js';
import { checkEngineOptions, defaultEngineOptions, type EngineOptions } from '../engine/options.js';
import { UserError } from '../errors.js';
import { kvEventsFlagsFromConfig } from './kv-events-config.js';
import { openModel, type LoadedModel, type LoadFormat } from '../model/load.js';
import { defaultPreset, presets } from '../model/presets.js';
import {
  createLogger,
  defaultDrainTimeoutMs,
  defaultHttpSettings,
  defaultKvEventsBufferSteps,
  defaultKvEventsTopic,
  defaultWedgeTimeoutMs,
  KvEventPublisher,
  logLevels,
  startServer,
  type Logger,
  type LogLevel,
  type RunningServer,
  type ServedEngine,
} from '../server/index.js';
import { parseFloatOption, parseIntOption } from './options.js';
import { addBackendFlags, backendOptions, createBackendFromFlags, dequantizedDType, tensorParallelSize, type BackendFlags } from './backend-flags.js';
import { parameterCount } from '../model/config.js';
import { FaultInjectingBackend, parseFaultSpec, type FaultSpec } from '../engine/fault-injection.js';

interface ServeOptions extends BackendFlags {
  modelPath?: string;
  revision?: string;
  chatTemplate?: string;
  servedModelName?: string;
  loadFormat: LoadFormat;
  memFractionStatic?: number;
  memFrac?: number;
  maxTotalTokens?: number;
  contextLength?: number;
  chunkedPrefillSize?: number;
  maxPrefillTokens?: number;
  maxRunningRequests?: number;
  maxQueuedRequests?: number;
  maxQueuedTokens?: number;
  allowedOrigins?: string[];
  requestTimeout?: number;
  timeoutKeepAlive: number;
  headerTimeout: number;
  bodyTimeout: number;
  logFormat: 'text' | 'json';
  schedulePolicy?: 'lpm' | 'fcfs';
  scheduleConservativeness?: number;
  enableDeterministicInference?: boolean;
  disableRadixCache?: boolean;
  disableRegexJumpForward?: boolean;
  disableOverlapSchedule?: boolean;
  pageSize?: number;
  host: string;
  port: number;
  apiKey?: string;
  logLevel: LogLevel;
  disableLogRequests?: boolean;
  seed?: number;
  drainTimeout: number;
  watchdogTimeout: number;
  kvEventsEndpoint?: string;
  kvEventsTopic?: string;
  kvEventsBlockSize: number;
  kvEventsReplayEndpoint?: string;
  kvEventsBufferSteps: number;
  kvEventsHwm?: number;
  kvEventsConfig?: string;
  faultInjection?: string;
  engineThread: EngineThread;
  streamInterval: number;
}

export const engineThreads = ['main', 'worker'] as const;
export type EngineThread = (typeof engineThreads)[number];

/** `sluice serve`: flags named as SGLang's launch_server names them, so its commands carry over. */
export function register(program: Command): void {
  const command = program
    .command('serve')
    .description(
      'serve a model over HTTP: OpenAI-compatible /v1 routes and SGLang-native /generate. ' +
        `When a request gives no max_tokens: ${defaultMaxTokens.completions} for /v1/completions, generation_config.json's max_new_tokens or else the rest of the context for /v1/chat/completions, ` +
        `${defaultMaxTokens.generate} for /generate. SIGTERM or SIGINT drains (a second one exits at once).`,
    )
    .option(
      '--model-path <path>',
      `a Hugging Face model id (org/name, fetched into the HF cache) or folder, a GGUF file or a preset name (default: the ${defaultPreset} preset, random weights)`,
    )
    .option('--revision <rev>', 'Hugging Face model ids: the branch, tag or commit to load (default main)')
    .option('--served-model-name <name>', 'the model name /v1/models lists (default: the Hugging Face id, file, folder or preset name)')
    .option('--chat-template <file>', "a Jinja chat template file (or the template itself) replacing the tokenizer's")
    .addOption(new Option('--load-format <format>', 'where weights come from').choices(['auto', 'safetensors', 'gguf', 'dummy']).default('auto'));
  addBackendFlags(command)
    .option('--mem-fraction-static <f>', 'fraction of device memory for weights and KV cache (GPU backends)', parseFloatOption)
    .option('--mem-frac <f>', 'alias of --mem-fraction-static', parseFloatOption)
    .option('--max-total-tokens <n>', 'KV cache size in tokens (overrides the memory fraction)', parseIntOption)
    .option(
      '--context-length <n>',
      `tokens of prompt plus completion a request may use (default: the model's; above the model's maximum only with ${allowLongContextEnv}=1)`,
      parseIntOption,
    )
    .option('--chunked-prefill-size <n>', 'prompt tokens prefilled per step (per request, and all requests together while others decode); -1 disables chunking', parseIntOption)
    .option('--max-prefill-tokens <n>', 'prefill tokens per step, all requests together', parseIntOption)
    .option('--max-running-requests <n>', 'sequences decoding at once', parseIntOption)
    .option('--max-queued-requests <n>', 'waiting sequences at most (n > 1 samples count); beyond it requests get 503', parseIntOption)
    .option('--max-queued-tokens <n>', 'prompt tokens of the waiting sequences at most; beyond it requests get 503', parseIntOption)
    .option('--allowed-origins <origins...>', 'CORS: origins browsers may call from ("*" for any); none by default')
    .option('--request-timeout <seconds>', 'abort a generation (freeing its KV) that runs longer than this', parseFloatOption)
    .option('--timeout-keep-alive <seconds>', 'close keep-alive connections idle for this long', parseFloatOption, defaultHttpSettings.keepAliveTimeoutMs / 1000)
    .option('--header-timeout <seconds>', 'time a client has to send its request headers', parseFloatOption, defaultHttpSettings.headersTimeoutMs / 1000)
    .option('--body-timeout <seconds>', 'time a client has to send its whole request', parseFloatOption, defaultHttpSettings.bodyTimeoutMs / 1000)
    .addOption(new Option('--log-format <format>', 'log lines as text or JSON lines').choices(['text', 'json']).default('text'))
    .addOption(new Option('--schedule-policy <policy>', 'lpm: longest cached prefix first; fcfs: arrival order').choices(['lpm', 'fcfs']))
    .option('--schedule-conservativeness <f>', 'above 1: admission reserves more KV for future tokens (fewer retractions); below 1: less (default 1)', parseFloatOption)
    .option('--disable-radix-cache', 'no prefix caching between requests')
    .option(
      '--enable-deterministic-inference',
      'seeded requests give the same output whatever else is batched (every token runs in a forward of its own: slower); ref and cpu only',
    )
    .option('--disable-regex-jump-forward', 'structured output: sample every token, even where the grammar allows only one continuation')
    .option(
      '--disable-overlap-schedule',
      'plan and launch each step only after the previous one returned (by default a backend that can take input tokens still on the device gets step N+1 while step N runs; none of the built-in backends can yet)',
    )
    .option('--enable-torch-compile', 'accepted for SGLang compatibility and ignored: there is no torch here (CUDA graphs are on unless --disable-cuda-graph)')
    .option('--disable-cuda-graph', 'cuda backend: run decode steps without graph capture')
    .option('--page-size <n>', 'token slots per KV page', parseIntOption)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on', parseIntOption, 30000)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on every route but /health and /metrics')
    .addOption(new Option('--log-level <level>', 'log verbosity').choices(logLevels).default('info'))
    .option('--disable-log-requests', 'no log line per finished request')
    .option('--seed <n>', 'seed of random (dummy) weights', parseIntOption)
        .addOption(
      new Option(
        '--engine-thread <where>',
        'worker: the scheduler and backend run in their own thread and long prompts are tokenized in another, so the HTTP side (parsing, tokenizing, streaming) never delays a step; main: one thread for everything',
      )
        .choices(engineThreads)
        .default('main'),
    )
    .option(
      '--stream-interval <n>',
      'streaming: send each choice every n tokens (its first and last token at once); above 1 fewer, larger chunks cost the server and the client less per token',
      parseIntOption,
      1,
    )
    .option('--kv-events-endpoint <url>', 'publish KV-cache events (vLLM\'s format, for llm-d / Dynamo prefix-aware routing) on a ZeroMQ PUB socket, e.g. tcp://*:5557; off by default')
    .option('--kv-events-topic <topic>', 'ZeroMQ topic of the KV events (default: kv@<host>:<port>@<served model name>)')
    .option('--kv-events-block-size <n>', 'tokens per block in KV events (independent of --page-size; llm-d uses 16 or 64)', parseIntOption, 16)
    .option('--kv-events-replay-endpoint <url>', 'bind a ZeroMQ ROUTER socket that sends recent KV event batches again from a given sequence number (vLLM\'s replay_endpoint), e.g. tcp://*:5558; off by default')
    .option('--kv-events-buffer-steps <n>', 'how many of the latest KV event batches the replay socket keeps (vLLM\'s buffer_steps)', parseIntOption, defaultKvEventsBufferSteps)
    .option('--kv-events-config <json>', 'vLLM\'s KVEventsConfig as JSON (enable_kv_cache_events, publisher "zmq", endpoint, topic, replay_endpoint, buffer_steps, hwm) instead of the --kv-events-* flags')
    .option(
      '--watchdog-timeout <seconds>',
      'no engine step for this long while requests wait makes /health answer 503; a step running this long stops the server (exit 1)',
      parseFloatOption,
      defaultWedgeTimeoutMs / 1000,
    )
    .addOption(new Option('--fault-injection <spec>', 'testing: make a backend step fail (step-throws:N or step-hangs:N)').hideHelp())
    .option('--drain-timeout <seconds>', 'on SIGTERM/SIGINT, how long in-flight requests may take before they are aborted', parseFloatOption, defaultDrainTimeoutMs / 1000)
    .action(async (options: ServeOptions) => {
      await serve(options);
    });
}

async function serve(options: ServeOptions): Promise<void> {
  const log = createLogger(options.logLevel, undefined, options.logFormat);
  log.info(describeWeights(options));
  const engineSettings = checkFlags(options, log);
  const fault = options.faultInjection === undefined ? null : parseFaultSpec(options.faultInjection);
  const model = await openModel({
    modelPath: options.modelPath,
    loadFormat: options.loadFormat,
    seed: options.seed,
    dequantizeTo: dequantizedDType(options),
    revision: options.revision,
    chatTemplate: options.chatTemplate,
    log: (line) => log.info(line),
  });
  const kvEvents = await openKvEvents(options, options.servedModelName ?? model.name, log);
  // Block hashes are seeded as vLLM seeds them (PYTHONHASHSEED), so llm-d's hashSeed can match.
  if (kvEvents) engineSettings.kvEvents = { blockSize: kvEvents.config.blockSize, sink: kvEvents.publish, hashSeed: process.env.PYTHONHASHSEED ?? '' };
  let server: RunningServer | null = null;
  engineSettings.onFatal = (message) => exitOnEngineFailure(message, server, log);
  const engine = await startEngine(model, options, engineSettings, log, fault).catch(async (e) => {
    await kvEvents?.close();
    throw e;
  });
  server = await listen(engine, model, options, log, kvEvents);
  log.info(`serving ${server.context.servedModelName} on ${server.url} (OpenAI API under /v1, SGLang's /generate)`);
  drainOnSignals(server, options.drainTimeout * 1000, log);
}

/** Bad flag values fail before the (slow) model load. Returns the engine's options. */
function checkFlags(options: ServeOptions, log: Logger): Partial<EngineOptions> {
  if (!(options.drainTimeout >= 0)) throw new UserError(`--drain-timeout ${options.drainTimeout}: give seconds, 0 or more`);
  for (const flag of ['requestTimeout', 'timeoutKeepAlive', 'headerTimeout', 'bodyTimeout'] as const) {
    const seconds = options[flag];
    if (seconds !== undefined && !(seconds > 0)) throw new UserError(`--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${seconds}: give seconds, more than 0`);
  }
  if (!(options.streamInterval >= 1)) throw new UserError(`--stream-interval ${options.streamInterval}: give a whole number of tokens, 1 or more`);
  if (!(options.watchdogTimeout > 0)) throw new UserError(`--watchdog-timeout ${options.watchdogTimeout}: give seconds, more than 0`);
  if (options.port < 0 || options.port > 65535) throw new UserError(`--port ${options.port} is not a port number (0-65535)`);
  if (options.kvEventsConfig !== undefined) {
    if (options.kvEventsEndpoint !== undefined || options.kvEventsTopic !== undefined || options.kvEventsReplayEndpoint !== undefined) {
      throw new UserError('give --kv-events-config or the --kv-events-endpoint/-topic/-replay-endpoint flags, not both');
    }
    Object.assign(options, kvEventsFlagsFromConfig(options.kvEventsConfig, options));
  }
  if (!(Number.isInteger(options.kvEventsBlockSize) && options.kvEventsBlockSize > 0)) {
    throw new UserError(`--kv-events-block-size ${options.kvEventsBlockSize}: give a positive number of tokens`);
  }
  if (options.kvEventsTopic !== undefined && options.kvEventsEndpoint === undefined) throw new UserError('--kv-events-topic needs --kv-events-endpoint');
  if (options.kvEventsReplayEndpoint !== undefined && options.kvEventsEndpoint === undefined) throw new UserError('--kv-events-replay-endpoint needs --kv-events-endpoint');
  if (!(Number.isInteger(options.kvEventsBufferSteps) && options.kvEventsBufferSteps > 0)) {
    throw new UserError(`--kv-events-buffer-steps ${options.kvEventsBufferSteps}: give a positive number of batches`);
  }
  backendOptions(options);
  const settings = engineOptions(options, log);
  checkEngineOptions({ ...defaultEngineOptions, ...definedOnly(settings) });
  return settings;
}

/**
 * The backend failed or hung: the engine has ended every request with the error, so say what
 * happened in one line and exit non-zero for the supervisor to restart the server.
 */
function exitOnEngineFailure(message: string, server: RunningServer | null, log: Logger): void {
  log.error(`engine failed, exiting: ${message}`);
  const closed = server ? server.shutdown(1000).catch(() => {}) : Promise.resolve();
  const cap = new Promise((resolve) => setTimeout(resolve, 2000).unref());
  void Promise.race([closed, cap]).then(() => process.exit(1));
}

async function startEngine(
  model: LoadedModel,
  options: ServeOptions,
  settings: Partial<EngineOptions>,
  log: Logger,
  fault: FaultSpec | null,
): Promise<ServedEngine> {
  const engine =
    options.engineThread === 'worker' ? await startWorkerEngine(model, options, settings, log, fault) : await startMainEngine(model, options, settings, log, fault);
  const stats = engine.stats();
  log.info(`KV cache: ${stats.kvPagesTotal * stats.pageSize} tokens in pages of ${stats.pageSize}; context length ${engine.contextLength}`);
  return engine;
}

async function startWorkerEngine(model: LoadedModel, options: ServeOptions, settings: Partial<EngineOptions>, log: Logger, fault: FaultSpec | null): Promise<WorkerEngine> {
  log.info('engine thread: starting; it loads the backend and the weights');
  const { logger: _, ...engine } = settings;
  const engineThread = await WorkerEngine.start({
    model,
    // The files the main thread found (a Hugging Face id's snapshot, a GGUF file): no second download.
    load: { modelPath: model.path, loadFormat: options.loadFormat, seed: options.seed, dequantizeTo: dequantizedDType(options) },
    // Every flag travels (plain values only): the engine thread's backend reads the ones it knows.
    backend: { kind: 'flags', flags: plainValues(options) as unknown as BackendFlags, fault },
    engine,
    logger: log,
  });
  log.info(`loaded in the engine thread: ${engineThread.backendDescription}; ${formatParameters(parameterCount(model.config))} parameters`);
  return engineThread;
}

async function startMainEngine(
  model: LoadedModel,
  options: ServeOptions,
  settings: Partial<EngineOptions>,
  log: Logger,
  fault: FaultSpec | null,
): Promise<LlmEngine> {
  const created = await createBackendFromFlags(options);
  const backend = fault ? new FaultInjectingBackend(created, fault) : created;
  log.info(`backend: ${backend.description}; loading the weights`);
  let engine: LlmEngine;
  try {
    engine = await LlmEngine.create(model, backend, settings);
  } catch (e) {
    await backend.close().catch(() => {});
    throw e;
  }
  log.info(`loaded: ${backend.description}; ${formatParameters(parameterCount(model.config))} parameters`);
  return engine;
}

function plainValues(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && ['string', 'number', 'boolean'].includes(typeof v)));
}

async function openKvEvents(options: ServeOptions, servedModelName: string, log: Logger): Promise<KvEventPublisher | null> {
  if (options.kvEventsEndpoint === undefined) return null;
  const topic = options.kvEventsTopic ?? defaultKvEventsTopic(options.host, options.port, servedModelName);
  try {
    const publisher = await KvEventPublisher.open({
      endpoint: options.kvEventsEndpoint,
      topic,
      blockSize: options.kvEventsBlockSize,
      replayEndpoint: options.kvEventsReplayEndpoint ?? null,
      bufferSteps: options.kvEventsBufferSteps,
      hwm: options.kvEventsHwm,
    });
    const replay = options.kvEventsReplayEndpoint ? `; replay on ${options.kvEventsReplayEndpoint} (last ${options.kvEventsBufferSteps} batches)` : '';
    log.info(`KV events: ZeroMQ PUB on ${options.kvEventsEndpoint}, topic ${topic}, blocks of ${options.kvEventsBlockSize} tokens${replay}`);
    return publisher;
  } catch (e) {
    const flag = options.kvEventsReplayEndpoint ? `--kv-events-endpoint ${options.kvEventsEndpoint} / --kv-events-replay-endpoint ${options.kvEventsReplayEndpoint}` : `--kv-events-endpoint ${options.kvEventsEndpoint}`;
    throw new UserError(`${flag}: ${(e as Error).message}`);
  }
}

async function listen(engine: ServedEngine, model: LoadedModel, options: ServeOptions, log: Logger, kvEvents: KvEventPublisher | null): Promise<RunningServer> {
  try {
    return await startServer({
      engine,
      model,
      servedModelName: options.servedModelName,
      host: options.host,
      port: options.port,
      apiKey: options.apiKey ?? null,
      log,
      logRequests: !options.disableLogRequests,
      wedgeTimeoutMs: options.watchdogTimeout * 1000,
      http: {
        allowedOrigins: options.allowedOrigins,
        requestTimeoutMs: options.requestTimeout === undefined ? undefined : options.requestTimeout * 1000,
        keepAliveTimeoutMs: options.timeoutKeepAlive * 1000,
        headersTimeoutMs: options.headerTimeout * 1000,
        bodyTimeoutMs: options.bodyTimeout * 1000,
        logFormat: options.logFormat,
      },
      kvEvents,
      tpSize: tensorParallelSize(options),
      tokenizerThread: options.engineThread === 'worker',
      streamInterval: options.streamInterval,
    });
  } catch (e) {
    await engine.close();
    await kvEvents?.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new UserError(`${options.host}:${options.port} is already in use (choose another --port)`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new UserError(`cannot listen on --host ${options.host}: ${(e as Error).message}`);
    throw e;
  }
}

/** SIGTERM or SIGINT: stop accepting, let in-flight requests finish (up to the timeout), exit 0. A second signal kills at once. */
function drainOnSignals(server: RunningServer, timeoutMs: number, log: Logger): void {
  const onSignal = (signal: NodeJS.Signals) => {
    // From now on either signal has its default effect: the process ends at once.
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
    log.info(`${signal}: shutting down (no new requests; in-flight ones may finish; signal again to quit now)`);
    server
      .shutdown(timeoutMs)
      .then(() => {
        log.info('shut down cleanly');
        process.exit(0);
      })
      .catch((e: Error) => {
        log.error(`shutdown failed: ${e.message}`);
        process.exit(1);
      });
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

/** The first log line: what is served, and loudly when its weights are random. */
function describeWeights(options: ServeOptions): string {
  const path = options.modelPath;
  if (path === undefined) {
    return `no --model-path: serving the ${defaultPreset} preset with RANDOM weights (output is meaningless text; give --model-path for a real model)`;
  }
  if (presets[path.toLowerCase()] && !existsSync(path)) return `serving the ${path} preset with RANDOM weights (output is meaningless text)`;
  if (options.loadFormat === 'dummy') return `serving ${path} with RANDOM weights (--load-format dummy)`;
  return `loading ${path}`;
}

/** 1.24B, 3.2M: the size people quote models by. */
function formatParameters(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : `${(n / 1e6).toFixed(1)}M`;
}

function engineOptions(options: ServeOptions, log: Logger): Partial<EngineOptions> {
  return {
    pageSize: options.pageSize,
    maxTotalTokens: options.maxTotalTokens,
    memFractionStatic: options.memFractionStatic ?? options.memFrac,
    chunkedPrefillSize: options.chunkedPrefillSize,
    maxPrefillTokens: options.maxPrefillTokens,
    maxRunningRequests: options.maxRunningRequests,
    schedulePolicy: options.schedulePolicy,
    scheduleConservativeness: options.scheduleConservativeness,
    allowLongContext: isTruthy(process.env[allowLongContextEnv]),
    deterministicInference: options.enableDeterministicInference,
    disableRadixCache: options.disableRadixCache,
    disableRegexJumpForward: options.disableRegexJumpForward,
    disableOverlapSchedule: options.disableOverlapSchedule,
    contextLength: options.contextLength,
    maxQueuedRequests: options.maxQueuedRequests,
    stepTimeoutMs: options.watchdogTimeout * 1000,
    maxQueuedTokens: options.maxQueuedTokens,
    logger: log,
  };
}

/** SGLang's name for the override, read by `sluice serve` as SGLang reads it. */
const allowLongContextEnv = 'SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN';

function isTruthy(value: string | undefined): boolean {
  return value !== undefined && ['1', 'true', 'yes'].includes(value.toLowerCase());
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
