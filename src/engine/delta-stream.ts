import type { GenerateDelta } from './types.js';

/**
 * A consumer called synchronously as the engine pushes (DeltaStream.listen). It runs inside the
 * engine's output processing, so it must not throw and must not call back into the engine
 * (abort, generate) before returning: defer that to a microtask.
 */
export interface DeltaListener {
  delta(delta: GenerateDelta): void;
  end(): void;
  fail(error: Error): void;
}

/**
 * The async stream of one request's deltas. The engine pushes; the consumer iterates. A consumer
 * that stops early (break, return) calls `onCancel`, which aborts the request. Written as a plain
 * iterator rather than an async generator: it is on the per-token path of every request.
 * Instead of iterating, a consumer may listen(): it then gets every delta synchronously as it is
 * pushed, with no promise per token (the server's streaming path: one pass writes a step's SSE
 * frames), and may stop listening for a while (deltas queue again) and listen again.
 */
export class DeltaStream implements AsyncIterable<GenerateDelta>, AsyncIterator<GenerateDelta> {
  private readonly queue: GenerateDelta[] = [];
  private head = 0;
  private ended = false;
  private error: Error | null = null;
  // The consumer waiting in next(), if any: two fields rather than an object, as this is per token.
  private resolveWaiter: ((r: IteratorResult<GenerateDelta>) => void) | null = null;
  private rejectWaiter: ((e: Error) => void) | null = null;
  private listener: DeltaListener | null = null;

  constructor(private readonly onCancel: () => void) {}

  push(delta: GenerateDelta): void {
    const listener = this.listener;
    if (listener) {
      listener.delta(delta);
      return;
    }
    const resolve = this.resolveWaiter;
    if (resolve) {
      this.resolveWaiter = this.rejectWaiter = null;
      resolve({ value: delta, done: false });
    } else {
      this.queue.push(delta);
    }
  }

  end(): void {
    this.ended = true;
    if (this.listener) this.settleListener();
    else this.settleWaiter();
  }

  fail(error: Error): void {
    this.error = error;
    this.ended = true;
    if (this.listener) this.settleListener();
    else this.settleWaiter();
  }

  /**
   * From now on every delta goes to `listener` as it is pushed, the queued ones first (at once),
   * then the end or failure. Not with a pending next().
   */
  listen(listener: DeltaListener): void {
    if (this.resolveWaiter) throw new Error('DeltaStream: listen() while a next() is pending');
    this.listener = listener;
    while (this.head < this.queue.length && this.listener === listener) listener.delta(this.queue[this.head++]!);
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    }
    if (this.listener === listener && this.ended) this.settleListener();
  }

  /** Deltas queue again until the next listen() or next(). */
  unlisten(): void {
    this.listener = null;
  }

  next(): Promise<IteratorResult<GenerateDelta>> {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head++]!;
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.error) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.resolveWaiter = resolve;
      this.rejectWaiter = reject;
    });
  }

  /** The consumer left early: abort the request. */
  return(): Promise<IteratorResult<GenerateDelta>> {
    if (!this.ended) this.onCancel();
    this.ended = true;
    this.queue.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<GenerateDelta> {
    return this;
  }

  private settleListener(): void {
    const listener = this.listener!;
    this.listener = null;
    if (this.error) listener.fail(this.error);
    else listener.end();
  }

  private settleWaiter(): void {
    const resolve = this.resolveWaiter;
    const reject = this.rejectWaiter;
    if (!resolve || !reject) return;
    this.resolveWaiter = this.rejectWaiter = null;
    if (this.error) reject(this.error);
    else resolve({ value: undefined, done: true });
  }
}

/** max_tokens 0: every sample finishes at once with no tokens, without a step. */
export function finishedAtOnce(requestId: string, promptTokens: number, n: number, logprobs: boolean): DeltaStream {
  const stream = new DeltaStream(() => {});
  for (let index = 0; index < n; index++) {
    stream.push({
      requestId,
      index,
      text: '',
      tokenIds: [],
      logprobs: logprobs ? [] : null,
      finishReason: 'length',
      matchedStop: null,
      usage: { promptTokens, completionTokens: 0, cachedTokens: 0 },
    });
  }
  stream.end();
  return stream;
}
