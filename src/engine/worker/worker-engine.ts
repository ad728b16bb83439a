/**
 * The Engine interface with the engine in a worker thread (`--engine-thread worker`): the HTTP
 * thread parses, tokenizes, renders chat templates and writes SSE; the engine thread schedules,
 * runs the backend, detokenizes and checks stop rules, and sends each step's deltas as one
 * message (protocol.ts). A slow HTTP side then delays only its own writes, never the next step.
 */
import { randomUUID } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { DeltaStream } from '../delta-stream.js';
import { ContextLengthError, EngineDeadError, EngineDrainingError, EngineOverloadedError, InvalidRequestError } from '../errors.js';
import type { EngineLogger, EngineOptions } from '../options.js';
import { resolveRequest } from '../params.js';
import type { Engine, EngineSettings, EngineStats, GenerateDelta, GenerateRequest } from '../types.js';
import type { LoadedModel } from '../../model/load.js';
import { UserError } from '../../errors.js';
import { deserializeError, readDelta, StepProgress, type FromEngine, type SerializedError, type ToEngine, type WorkerInit } from './protocol.js';

/** The error classes the server maps to HTTP statuses; others arrive as plain Errors with their name. */
const errorClasses = [ContextLengthError, InvalidRequestError, EngineDrainingError, EngineOverloadedError, EngineDeadError, UserError];

/** How long close() lets the engine thread finish (close its backend) before ending the thread. */
const closeGraceMs = 5000;

export interface WorkerEngineOptions extends Omit<WorkerInit, 'engine' | 'kvEvents' | 'progress'> {
  /** The engine's options; onFatal and the kvEvents sink are called on this thread (functions cannot cross), the logger is `logger`. */
  engine: Omit<Partial<EngineOptions>, 'logger'>;
  /** The model as the HTTP thread loaded it (tokenizer, config): for validation only; the engine thread loads its own. */
  model: LoadedModel;
  logger?: EngineLogger & { error?(message: string): void };
}

interface Pending {
  id: string;
  stream: DeltaStream;
}

export class WorkerEngine implements Engine {
  readonly contextLength: number;
  readonly settings: EngineSettings;
  /** The backend's one-line description, as the engine thread reports it. */
  readonly backendDescription: string;
  private readonly requests = new Map<number, Pending>();
  private readonly handlesById = new Map<string, number>();
  private readonly calls = new Map<number, (value: unknown) => void>();
  private nextHandle = 1;
  private nextCall = 1;
  private latest: EngineStats;
  /** Sequences sent to the engine thread in all, and how many of them it had taken as of the latest stats. */
  private sent = 0;
  private seen = 0;
  private accepting = true;
  private error: string | null = null;
  private exited = false;
  private closing = false;

  private constructor(
    private readonly worker: Worker,
    private readonly options: WorkerEngineOptions,
    ready: Extract<FromEngine, { type: 'ready' }>,
    private readonly progress: Int32Array,
  ) {
    this.contextLength = ready.contextLength;
    this.settings = ready.settings;
    this.backendDescription = ready.description;
    this.latest = ready.stats;
    this.seen = ready.seen;
    worker.on('message', (message: FromEngine) => this.receive(message));
    worker.on('error', (e) => this.die(`the engine thread crashed: ${e.stack ?? e.message}`));
    worker.on('exit', (code) => {
      this.exited = true;
      if (this.error === null && !this.closing) this.die(`the engine thread exited unexpectedly (code ${code})`);
    });
  }

  /** Starts the engine thread, which loads the model and the backend; resolves when it is ready to take requests. */
  static async start(options: WorkerEngineOptions): Promise<WorkerEngine> {
    const { onFatal: _, kvEvents, ...engine } = options.engine;
    const progress = new SharedArrayBuffer(StepProgress.slots * Int32Array.BYTES_PER_ELEMENT);
    const init: WorkerInit = { load: options.load, backend: options.backend, engine, kvEvents: kvEvents ? withoutSink(kvEvents) : null, progress };
    const worker = new Worker(new URL('./engine-worker-entry.mjs', import.meta.url), { workerData: init });
    const ready = await new Promise<Extract<FromEngine, { type: 'ready' }>>((resolve, reject) => {
      const onMessage = (message: FromEngine) => {
        if (message.type === 'log') (options.logger ?? console).warn(message.message);
        else if (message.type === 'ready') done(() => resolve(message));
        else if (message.type === 'fatal') done(() => reject(deserializeError(message.error, errorClasses)));
      };
      const onError = (e: Error) => done(() => reject(e));
      const onExit = (code: number) => done(() => reject(new Error(`the engine thread exited while starting (code ${code})`)));
      const done = (settle: () => void) => {
        worker.off('message', onMessage).off('error', onError).off('exit', onExit);
        settle();
      };
      worker.on('message', onMessage).on('error', onError).on('exit', onExit);
    }).catch(async (e) => {
      await worker.terminate();
      throw e;
    });
    return new WorkerEngine(worker, options, ready, new Int32Array(progress));
  }

  generate(request: GenerateRequest): AsyncIterable<GenerateDelta> {
    return this.generateMany([request])[0]!;
  }

  /**
   * All or none, as on one thread: what this side can check (parameters, ids, the queue as of
   * the last stats) throws here; the engine thread checks again, and a refusal there (the queue
   * filled meanwhile) fails every one of these streams with the same error.
   */
  generateMany(requests: GenerateRequest[]): AsyncIterable<GenerateDelta>[] {
    if (this.error !== null) throw new EngineDeadError(`the engine stopped after a backend error: ${this.error}`);
    if (!this.accepting) throw new EngineDrainingError('the engine is shutting down and accepts no new requests');
    let sequences = 0;
    requests.forEach((request, i) => {
      try {
        const params = resolveRequest(request, this.options.model.config.vocabSize, this.contextLength);
        if (params.maxNewTokens > 0) sequences += params.n;
      } catch (e) {
        if (e instanceof InvalidRequestError) e.requestIndex = i;
        throw e;
      }
    });
    const ids = requests.map((request) => request.id ?? randomUUID());
    const seen = new Set<string>();
    for (const id of ids) {
      if (this.handlesById.has(id) || seen.has(id)) throw new InvalidRequestError(`request id ${id} is already in use`, 'id');
      seen.add(id);
    }
    const waiting = this.stats().waitingRequests;
    if (sequences > 0 && waiting + sequences > this.settings.maxQueuedRequests) {
      throw new EngineOverloadedError(`too many requests waiting (${waiting} sequences); try again later`);
    }
    const handles = ids.map((id) => {
      const handle = this.nextHandle++;
      this.requests.set(handle, { id, stream: new DeltaStream(() => this.abort(id)) });
      this.handlesById.set(id, handle);
      return handle;
    });
    this.sent += sequences;
    this.send({ type: 'generate', handles, requests: requests.map((request, i) => ({ ...request, id: ids[i] })), sequences });
    return handles.map((handle) => this.requests.get(handle)!.stream);
  }

  /** The engine thread aborts the request on its next turn (freeing its KV); its stream then ends with the abort deltas. */
  abort(requestId: string): void {
    if (this.handlesById.has(requestId)) this.send({ type: 'abort', id: requestId });
  }

  /**
   * The engine's stats as of its last message (sent with every step, so at most one step old),
   * with the sequences still on their way to the engine thread counted as waiting.
   */
  stats(): EngineStats {
    const inTransit = this.sent - this.seen;
    if (this.error === null && inTransit === 0) return this.latest;
    return { ...this.latest, waitingRequests: this.latest.waitingRequests + inTransit, error: this.error ?? this.latest.error };
  }

  flushCache(): Promise<boolean> {
    return this.call('flushCache').then((flushed) => flushed === true);
  }

  async drain(): Promise<void> {
    this.accepting = false;
    await this.call('drain');
  }

  async close(): Promise<void> {
    this.accepting = false;
    this.closing = true;
    // A backend stuck in a step never lets the engine close: the thread is ended after a grace time.
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise((resolve) => (timer = setTimeout(resolve, closeGraceMs)));
    if (!this.exited) await Promise.race([this.call('close'), grace]);
    clearTimeout(timer);
    await this.worker.terminate();
  }

  /** A call the dead or exited engine thread will never answer resolves at once. */
  private call(method: 'flushCache' | 'drain' | 'close'): Promise<unknown> {
    if (this.error !== null || this.exited) return Promise.resolve(method === 'flushCache' ? false : null);
    const call = this.nextCall++;
    return new Promise((resolve) => {
      this.calls.set(call, resolve);
      this.send({ type: 'call', call, method });
    });
  }

  private send(message: ToEngine): void {
    if (!this.exited) this.worker.postMessage(message);
  }

  private receive(message: FromEngine): void {
    switch (message.type) {
      case 'step': {
        this.takeStats(message);
        // Counted as handled once taken: the engine thread may plan its next step while this one's
        // frames are written (the streams' listeners write them synchronously as they are pushed).
        Atomics.add(this.progress, StepProgress.handled, 1);
        Atomics.notify(this.progress, StepProgress.handled);
        const batch = message.batch;
        for (let i = 0; i < batch.count; i++) {
          const pending = this.requests.get(batch.handles[i]!);
          if (pending) pending.stream.push(readDelta(batch, i, pending.id));
        }
        for (const handle of batch.ended) this.settle(handle)?.stream.end();
        for (const [handle, error] of batch.failed) this.settle(handle)?.stream.fail(this.revive(error));
        return;
      }
      case 'reply':
        this.takeStats(message);
        this.calls.get(message.call)?.(message.value);
        this.calls.delete(message.call);
        return;
      case 'log':
        (this.options.logger ?? console).warn(message.message);
        return;
      case 'fatal':
        this.die(`the engine thread failed: ${message.error.message}`);
        return;
      case 'stats':
        this.takeStats(message);
        return;
      case 'kv-events':
        this.options.engine.kvEvents?.sink(message.events);
        return;
      case 'engine-stopped':
        this.takeStats(message);
        if (this.options.engine.onFatal) this.options.engine.onFatal(message.message);
        else (this.options.logger ?? console).warn(`engine stopped: ${message.message}`);
        return;
      case 'ready':
        return;
    }
  }

  private takeStats(report: { stats: EngineStats; seen: number }): void {
    this.latest = report.stats;
    this.seen = report.seen;
  }

  private settle(handle: number): Pending | undefined {
    const pending = this.requests.get(handle);
    if (!pending) return undefined;
    this.requests.delete(handle);
    this.handlesById.delete(pending.id);
    return pending;
  }

  private revive(error: SerializedError): Error {
    return deserializeError(error, errorClasses);
  }

  /** The engine thread is gone: fail everything in flight, answer pending calls, refuse new work. */
  private die(reason: string): void {
    if (this.error !== null) return;
    this.error = reason.split('\n')[0]!;
    this.accepting = false;
    const log = this.options.logger;
    (log?.error ?? log?.warn ?? console.error).call(log, `engine thread down: ${reason}`);
    for (const pending of this.requests.values()) pending.stream.fail(new EngineDeadError(`the engine failed: ${this.error}`));
    this.requests.clear();
    this.handlesById.clear();
    for (const resolve of this.calls.values()) resolve(null);
    this.calls.clear();
  }
}

function withoutSink<T extends { sink: unknown }>(settings: T): Omit<T, 'sink'> {
  const { sink: _, ...rest } = settings;
  return rest;
}
