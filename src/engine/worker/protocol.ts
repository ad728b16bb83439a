/**
 * The messages between the HTTP thread and the engine thread (worker-engine.ts and
 * engine-worker.ts). Requests travel as small numbered handles; everything the engine produced in
 * one step travels as ONE message, column-wise in typed arrays (transferred, not copied) plus one
 * string of all the step's text, so the cost per token is a few array slots, not an object.
 */
import type { LoadOptions } from '../../model/load.js';
import type { KvEvent } from '../kv-events.js';
import type { EngineOptions } from '../options.js';
import type { EngineSettings, EngineStats, FinishReason, GenerateDelta, GenerateRequest } from '../types.js';
import type { BackendRecipe } from './backend-recipe.js';

export interface WorkerInit {
  load: LoadOptions;
  backend: BackendRecipe;
  /** Cloneable options only: the engine thread supplies the logger, onFatal and the KV-event sink, which report back. */
  engine: Omit<Partial<EngineOptions>, 'logger' | 'onFatal' | 'kvEvents'>;
  /** KV events on (the HTTP thread publishes them): the engine's kvEvents settings without the sink; null: off. */
  kvEvents: Omit<NonNullable<EngineOptions['kvEvents']>, 'sink'> | null;
  /** Int32 slots shared by both threads: StepProgress.posted and StepProgress.handled. */
  progress: SharedArrayBuffer;
}

/**
 * Step messages posted by the engine thread and handled by the HTTP thread (slots of
 * WorkerInit.progress). The engine thread plans no step while more than `maxStepsAhead` of its
 * step messages wait unhandled: without that bound a HTTP thread slower than the device lets
 * the engine run on, and every token, first tokens too, waits behind a growing queue of steps.
 */
export const StepProgress = { posted: 0, handled: 1, slots: 2, maxStepsAhead: 2 } as const;

/** HTTP thread -> engine thread. */
export type ToEngine =
  /** generateMany: one handle per request, all admitted or none. */
  | { type: 'generate'; handles: number[]; requests: GenerateRequest[]; sequences: number }
  | { type: 'abort'; id: string }
  | { type: 'call'; call: number; method: 'flushCache' | 'drain' | 'close' };

/**
 * Engine thread -> HTTP thread. Every `stats` comes with `seen`: the sequences of all generate
 * messages the engine thread had taken by then, so the HTTP side counts the ones still in
 * flight between the threads as waiting.
 */
export type FromEngine =
  | { type: 'ready'; contextLength: number; settings: EngineSettings; description: string; stats: EngineStats; seen: number }
  | { type: 'step'; batch: DeltaBatch; stats: EngineStats; seen: number }
  | { type: 'stats'; stats: EngineStats; seen: number }
  | { type: 'reply'; call: number; value: unknown; stats: EngineStats; seen: number }
  | { type: 'log'; message: string }
  | { type: 'kv-events'; events: KvEvent[] }
  /** The engine stopped after a backend failure (its onFatal); the thread lives on, refusing work. */
  | { type: 'engine-stopped'; message: string; stats: EngineStats; seen: number }
  | { type: 'fatal'; error: SerializedError };

/**
 * The fields of a delta beyond the columns (logprobs, matchedStop, usage, timing, and any field
 * added later), sent only for deltas where one is set.
 */
export type DeltaExtra = Partial<Omit<GenerateDelta, ColumnField>>;

type ColumnField = 'requestId' | 'index' | 'text' | 'tokenIds' | 'finishReason';
const columnFields = new Set<string>(['requestId', 'index', 'text', 'tokenIds', 'finishReason']);

/**
 * The deltas, stream ends and stream failures of one step, in the order the engine made them.
 * Delta i: handles[i], indexes[i], tokens[tokenStart[i] .. tokenStart[i+1]), text
 * text.slice(textStart[i], textStart[i+1]), finish code finish[i] (-1: none), extras[i] if set.
 * The requestId is the handle's (the HTTP side knows it). Ends and failures follow all deltas.
 */
export interface DeltaBatch {
  count: number;
  handles: Int32Array;
  indexes: Int32Array;
  tokenStart: Int32Array;
  tokens: Int32Array;
  text: string;
  textStart: Int32Array;
  finish: Int8Array;
  extras: Record<number, DeltaExtra>;
  ended: number[];
  failed: [handle: number, error: SerializedError][];
}

export const finishReasons: readonly FinishReason[] = ['stop', 'length', 'abort'];

/** Builds a DeltaBatch delta by delta; reused step after step (the arrays are handed over at build()). */
export class DeltaBatchWriter {
  private handles: number[] = [];
  private indexes: number[] = [];
  private tokenStart: number[] = [0];
  private tokens: number[] = [];
  private texts: string[] = [];
  private textStart: number[] = [0];
  private textLength = 0;
  private finish: number[] = [];
  private extras: Record<number, DeltaExtra> = {};
  private ended: number[] = [];
  private failed: [number, SerializedError][] = [];

  get empty(): boolean {
    return this.handles.length === 0 && this.ended.length === 0 && this.failed.length === 0;
  }

  add(handle: number, delta: GenerateDelta): void {
    const i = this.handles.length;
    this.handles.push(handle);
    this.indexes.push(delta.index);
    for (const id of delta.tokenIds) this.tokens.push(id);
    this.tokenStart.push(this.tokens.length);
    this.texts.push(delta.text);
    this.textLength += delta.text.length;
    this.textStart.push(this.textLength);
    this.finish.push(delta.finishReason === null ? -1 : finishReasons.indexOf(delta.finishReason));
    let extra: Record<string, unknown> | null = null;
    for (const key in delta) {
      const value = (delta as unknown as Record<string, unknown>)[key];
      if (value === null || value === undefined || columnFields.has(key)) continue;
      (extra ??= {})[key] = value;
    }
    if (extra) this.extras[i] = extra as DeltaExtra;
  }

  end(handle: number): void {
    this.ended.push(handle);
  }

  fail(handle: number, error: unknown): void {
    this.failed.push([handle, serializeError(error)]);
  }

  /** The batch so far, with its buffers listed for transfer; the writer starts empty again. */
  build(): { batch: DeltaBatch; transfer: ArrayBuffer[] } {
    const batch: DeltaBatch = {
      count: this.handles.length,
      handles: Int32Array.from(this.handles),
      indexes: Int32Array.from(this.indexes),
      tokenStart: Int32Array.from(this.tokenStart),
      tokens: Int32Array.from(this.tokens),
      text: this.texts.join(''),
      textStart: Int32Array.from(this.textStart),
      finish: Int8Array.from(this.finish),
      extras: this.extras,
      ended: this.ended,
      failed: this.failed,
    };
    this.handles = [];
    this.indexes = [];
    this.tokenStart = [0];
    this.tokens = [];
    this.texts = [];
    this.textStart = [0];
    this.textLength = 0;
    this.finish = [];
    this.extras = {};
    this.ended = [];
    this.failed = [];
    const transfer = [batch.handles, batch.indexes, batch.tokenStart, batch.tokens, batch.textStart, batch.finish].map((a) => a.buffer as ArrayBuffer);
    return { batch, transfer };
  }
}

/** Delta i of a batch as the Engine interface hands it out. */
export function readDelta(batch: DeltaBatch, i: number, requestId: string): GenerateDelta {
  const code = batch.finish[i]!;
  const delta: GenerateDelta = {
    requestId,
    index: batch.indexes[i]!,
    text: batch.text.slice(batch.textStart[i]!, batch.textStart[i + 1]!),
    tokenIds: Array.from(batch.tokens.subarray(batch.tokenStart[i]!, batch.tokenStart[i + 1]!)),
    logprobs: null,
    finishReason: code < 0 ? null : finishReasons[code]!,
    matchedStop: null,
    usage: null,
  };
  const extra = batch.extras[i];
  return extra ? Object.assign(delta, extra) : delta;
}

/** An error as it crosses the thread boundary: its class name, message and own fields (param, ...). */
export interface SerializedError {
  name: string;
  /** The class names from the error's own class up to Error, to revive it as the nearest class known on the other side. */
  lineage: string[];
  message: string;
  stack?: string;
  fields: Record<string, unknown>;
}

export function serializeError(error: unknown): SerializedError {
  if (!(error instanceof Error)) return { name: 'Error', lineage: ['Error'], message: String(error), fields: {} };
  const lineage: string[] = [];
  for (let proto = Object.getPrototypeOf(error); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) lineage.push(proto.constructor.name);
  const fields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(error)) {
    if (key !== 'name' && key !== 'message' && key !== 'stack' && isCloneable(value)) fields[key] = value;
  }
  return { name: error.name, lineage, message: error.message, stack: error.stack, fields };
}

function isCloneable(value: unknown): boolean {
  return value === null || ['string', 'number', 'boolean', 'undefined'].includes(typeof value) || Array.isArray(value);
}

/**
 * The error again, as an instance of the nearest class of its lineage found in `classes` (so
 * `instanceof` and the server's error mapping work as on one thread), keeping its name and fields.
 */
export function deserializeError(error: SerializedError, classes: readonly (abstract new (...args: never[]) => Error)[]): Error {
  const cls = error.lineage.map((name) => classes.find((c) => c.name === name)).find((c) => c !== undefined);
  const revived: Error = cls ? Object.create(cls.prototype) : new Error(error.message);
  Object.defineProperty(revived, 'message', { value: error.message, writable: true, configurable: true });
  Object.defineProperty(revived, 'name', { value: error.name, writable: true, configurable: true });
  if (error.stack) Object.defineProperty(revived, 'stack', { value: error.stack, writable: true, configurable: true });
  Object.assign(revived, error.fields);
  return revived;
}
