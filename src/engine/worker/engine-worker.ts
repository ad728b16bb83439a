/**
 * The engine thread: runs an ordinary LlmEngine (scheduler, KV pool, prefix cache, detokenizers,
 * stop rules) and its backend, and relays over the port of worker-engine.ts. Everything the
 * engine produced for the requests goes back once per step, after the next step was launched.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { setImmediate } from 'node:timers';
import { LlmEngine } from '../engine.js';
import { openModel } from '../../model/load.js';
import type { GenerateDelta } from '../types.js';
import { createBackendFromRecipe } from './backend-recipe.js';
import { DeltaBatchWriter, serializeError, StepProgress, type FromEngine, type ToEngine, type WorkerInit } from './protocol.js';

const port = parentPort!;
const post = (message: FromEngine, transfer: ArrayBuffer[] = []) => port.postMessage(message, transfer);

async function start(init: WorkerInit): Promise<void> {
  const progress = new Int32Array(init.progress);
  let closing = false;
  const beforeStep = () => (closing || stepsAhead(progress) <= StepProgress.maxStepsAhead ? null : untilCaughtUp(progress, () => closing));
  const model = await openModel(init.load);
  const backend = await createBackendFromRecipe(init.backend);
  let engine: LlmEngine;
  try {
    engine = await LlmEngine.create(model, backend, {
      ...init.engine,
      logger: { warn: (message) => post({ type: 'log', message }) },
      beforeStep,
      onFatal: (message) => queueMicrotask(() => post({ type: 'engine-stopped', message, stats: engine.stats(), seen })),
      kvEvents: init.kvEvents === null ? null : { ...init.kvEvents, sink: (events) => post({ type: 'kv-events', events }) },
    });
  } catch (e) {
    await backend.close().catch(() => {});
    throw e;
  }
  const outbox = new DeltaBatchWriter();
  /** Sequences of the generate messages taken so far, and as of the last stats sent. */
  let seen = 0;
  let seenReported = 0;
  let flushQueued = false;
  // Runs in the check phase after the engine's own setImmediate, i.e. once the next step is launched.
  const flush = () => {
    flushQueued = false;
    if (outbox.empty) {
      if (seenReported < seen) post({ type: 'stats', stats: engine.stats(), seen });
    } else {
      const { batch, transfer } = outbox.build();
      post({ type: 'step', batch, stats: engine.stats(), seen }, transfer);
      Atomics.add(progress, StepProgress.posted, 1);
    }
    seenReported = seen;
  };
  const queueFlush = () => {
    if (flushQueued) return;
    flushQueued = true;
    setImmediate(flush);
  };

  /** Reads one request's stream into the outbox. */
  const relay = (handle: number, stream: AsyncIterator<GenerateDelta>) => {
    const pump = (): void => {
      stream.next().then(
        (result) => {
          if (result.done) outbox.end(handle);
          else outbox.add(handle, result.value);
          queueFlush();
          if (!result.done) pump();
        },
        (error) => {
          outbox.fail(handle, error);
          queueFlush();
        },
      );
    };
    pump();
  };

  port.on('message', (message: ToEngine) => {
    switch (message.type) {
      case 'generate':
        seen += message.sequences;
        queueFlush(); // the new requests show in the stats at once, not after the next step
        try {
          const streams = engine.generateMany(message.requests);
          streams.forEach((stream, i) => relay(message.handles[i]!, stream[Symbol.asyncIterator]()));
        } catch (e) {
          for (const handle of message.handles) outbox.fail(handle, e);
          queueFlush();
        }
        return;
      case 'abort':
        engine.abort(message.id);
        return;
      case 'call':
        if (message.method === 'close') closing = true; // a HTTP thread shutting down may not read its messages any more
        void answer(engine, message.call, message.method, flush, () => seen);
        return;
    }
  });
  post({ type: 'ready', contextLength: engine.contextLength, settings: engine.settings, description: backend.description, stats: engine.stats(), seen });
}

/** Atomics.waitAsync (Node 16+), not in this project's ES2022 lib typings. */
interface AtomicsWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number, timeoutMs: number): { async: false; value: string } | { async: true; value: Promise<string> };
}

function stepsAhead(progress: Int32Array): number {
  return Atomics.load(progress, StepProgress.posted) - Atomics.load(progress, StepProgress.handled);
}

/** Resolves once the HTTP thread is at most maxStepsAhead step messages behind (or the engine is closing). */
async function untilCaughtUp(progress: Int32Array, closing: () => boolean): Promise<void> {
  while (!closing() && stepsAhead(progress) > StepProgress.maxStepsAhead) {
    const handled = Atomics.load(progress, StepProgress.handled);
    const wait = (Atomics as unknown as AtomicsWaitAsync).waitAsync(progress, StepProgress.handled, handled, 100);
    if (wait.async) await wait.value;
  }
}

async function answer(engine: LlmEngine, call: number, method: 'flushCache' | 'drain' | 'close', flush: () => void, seen: () => number): Promise<void> {
  let value: unknown = null;
  if (method === 'flushCache') value = engine.flushCache();
  else if (method === 'drain') await engine.drain();
  else await engine.close();
  flush(); // whatever the call made (abort deltas of close) goes out before its answer
  post({ type: 'reply', call, value, stats: engine.stats(), seen: seen() });
  if (method === 'close') port.close();
}

start(workerData as WorkerInit).catch((e) => post({ type: 'fatal', error: serializeError(e) }));
