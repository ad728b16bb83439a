import { OptionError } from '../errors.js';
import type { KvEventSink } from './kv-events.js';
import type { LoadedModel } from '../model/load.js';

/** How the engine sizes its KV pool and schedules; the defaults are SGLang v0.3's. */
export interface EngineOptions {
  /** Token slots per KV page (1 allowed, as SGLang's default). */
  pageSize: number;
  /**
   * KV pool size in tokens. null: the backend's answer to Backend.kvCapacity (on a device, what
   * memFractionStatic leaves after the weights; on the host, min(1 GiB, 1/16 of system memory)
   * worth of KV, at most 2^20 tokens).
   */
  maxTotalTokens: number | null;
  /** Fraction of device memory for weights and KV (GPU backends). */
  memFractionStatic: number;
  /** Most prompt tokens one request prefills in one step (a longer prompt is split in chunks); -1: no limit but maxPrefillTokens. */
  chunkedPrefillSize: number;
  /** Most prefill tokens in one step, all requests together (decode tokens count against it). */
  maxPrefillTokens: number;
  /** Most sequences running at once; null: min(pool tokens / 2, 4096). */
  maxRunningRequests: number | null;
  /** lpm: longest cached prefix first (needs the radix cache); fcfs: arrival order. */
  schedulePolicy: 'lpm' | 'fcfs';
  disableRadixCache: boolean;
  /**
   * Structured output: off, every token is sampled; on (default), where the grammar allows one
   * continuation only, its tokens are appended without a decode step (SGLang's jump-forward).
   */
  disableRegexJumpForward: boolean;
  /**
   * Structured output: compute the token masks on a worker thread (default), so they overlap the
   * backend's step even where the backend holds this thread (onnxruntime's run); off: on this
   * thread, between the backend's awaits.
   */
  maskWorker: boolean;
  /** null: the model's max_position_embeddings. Clipped to the KV pool size. */
  contextLength: number | null;
  /** Waiting requests at most; beyond it generate() throws EngineOverloadedError. */
  maxQueuedRequests: number;
  /** SGLang's --schedule-conservativeness: above 1 admission reserves more KV for future tokens (fewer retractions), below 1 less. */
  scheduleConservativeness: number;
  /**
   * Allows a contextLength above the model's max_position_embeddings (positions the model was
   * not trained for). Off: such a contextLength is refused.
   */
  allowLongContext: boolean;
  /**
   * SGLang's --enable-deterministic-inference: every token runs in a forward of its own shape
   * (BatchInvariantBackend), so seeded requests give the same output whatever else is batched.
   * Refused on webgpu and cuda, whose kernels are not verified run-to-run deterministic.
   */
  deterministicInference: boolean;
  /**
   * SGLang's --disable-overlap-schedule: on a backend that can take the next step's input tokens
   * from the step still running (`Backend.overlapsSteps`), the engine plans and launches step N+1
   * while step N runs unless this is set. Without such a backend it changes nothing.
   */
  disableOverlapSchedule: boolean;
  /** Longest a backend step may take before the engine counts the backend as hung and stops; null: no limit. */
  stepTimeoutMs: number | null;
  /** Called once when the engine stops for good after a backend failure (a supervisor restarts the process). */
  onFatal?: (message: string) => void;
  /** Prompt tokens of the waiting sequences (n > 1 samples counted) at most; beyond it as maxQueuedRequests. */
  maxQueuedTokens: number;
  /** Where warnings (retractions, a clipped context) go; console by default. */
  logger?: EngineLogger;
  /**
   * Awaited before each step is planned, when it returns a promise: how the engine thread keeps
   * from running more than a few steps ahead of the thread that streams its tokens.
   */
  beforeStep?: () => Promise<void> | null;
  /** KV-cache events (vLLM's BlockStored / BlockRemoved / AllBlocksCleared) for prefix-aware routers; off when absent. */
  kvEvents?: { blockSize: number; sink: KvEventSink; hashSeed?: string } | null;
}

export const defaultEngineOptions: EngineOptions = {
  pageSize: 1,
  maxTotalTokens: null,
  memFractionStatic: 0.88,
  chunkedPrefillSize: 8192,
  maxPrefillTokens: 16384,
  maxRunningRequests: null,
  schedulePolicy: 'lpm',
  disableRadixCache: false,
  disableRegexJumpForward: false,
  maskWorker: true,
  contextLength: null,
  maxQueuedRequests: 10000,
  scheduleConservativeness: 1,
  allowLongContext: false,
  deterministicInference: false,
  disableOverlapSchedule: false,
  stepTimeoutMs: null,
  maxQueuedTokens: 4 * 1024 * 1024,
};


export interface EngineLogger {
  warn(message: string): void;
}

/** Checks option values; an OptionError names the bad one (the CLI shows it as its flag). */
export function checkEngineOptions(o: EngineOptions): void {
  const positiveInt = (option: keyof EngineOptions, nullable = false) => {
    const v = o[option];
    if (v === null && nullable) return;
    if (!Number.isInteger(v) || (v as number) < 1) throw new OptionError(option, (name) => `${name(option)} must be a positive integer, got ${v}`);
  };
  positiveInt('pageSize');
  positiveInt('maxTotalTokens', true);
  if (o.chunkedPrefillSize !== -1) positiveInt('chunkedPrefillSize');
  positiveInt('maxPrefillTokens');
  positiveInt('maxRunningRequests', true);
  positiveInt('contextLength', true);
  positiveInt('maxQueuedRequests');
  if (!(o.scheduleConservativeness > 0 && Number.isFinite(o.scheduleConservativeness))) {
    throw new OptionError('scheduleConservativeness', (name) => `${name('scheduleConservativeness')} must be a number above 0, got ${o.scheduleConservativeness}`);
  }
  if (o.stepTimeoutMs !== null && !(o.stepTimeoutMs > 0)) {
    throw new OptionError('stepTimeoutMs', (name) => `${name('stepTimeoutMs')} must be above 0, got ${o.stepTimeoutMs}`);
  }
  positiveInt('maxQueuedTokens');
  if (!(o.memFractionStatic > 0 && o.memFractionStatic <= 1)) {
    throw new OptionError('memFractionStatic', (name) => `${name('memFractionStatic')} must be in (0, 1], got ${o.memFractionStatic}`);
  }
  if (o.schedulePolicy !== 'lpm' && o.schedulePolicy !== 'fcfs') {
    throw new OptionError('schedulePolicy', (name) => `${name('schedulePolicy')} must be lpm or fcfs, got ${o.schedulePolicy}`);
  }
}

/** A context longer than the model's positions is refused (as SGLang and vLLM do) unless explicitly allowed. */
export function checkContextLength(model: LoadedModel, options: EngineOptions): void {
  const modelMax = model.config.maxPositionEmbeddings;
  if (options.contextLength === null || options.contextLength <= modelMax || options.allowLongContext) return;
  throw new OptionError(
    'contextLength',
    (name) =>
      `${name('contextLength')} ${options.contextLength} is above the model's maximum of ${modelMax} positions ` +
      `(max_position_embeddings); give at most ${modelMax}, or allow it explicitly with ${name('allowLongContext')} if you know the model copes`,
  );
}
