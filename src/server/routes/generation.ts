import type { ServerResponse } from 'node:http';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { DeltaStream } from '../../engine/delta-stream.js';
import { InvalidRequestError } from '../../engine/errors.js';
import type { GenerateDelta, GenerateRequest } from '../../engine/types.js';
import type { InFlightRequest, ServerContext } from '../context.js';
import { engineUnavailable, invalidParam, toApiError } from '../http/errors.js';
import { RequestMetricsRecorder } from '../http/request-metrics.js';

export interface TaggedDelta {
  /** Which of the generation's engine requests (prompts) this delta belongs to. */
  prompt: number;
  delta: GenerateDelta;
}

export interface PromptRequest extends GenerateRequest {
  id: string;
  /** The request field the prompt came in ("prompt", "prompt[1]", "messages", "input_ids", ...), for errors about it. */
  promptParam: string;
}

type Arrival = { prompt: number; result: IteratorResult<GenerateDelta> };

/** Where forward() sends a stream's deltas: the client's event stream. */
export interface DeltaSink {
  /** Takes one delta; false: the client can take no more now (its socket is full, or it is gone). */
  write(prompt: number, delta: GenerateDelta): boolean;
  /** Resolves once the client can take more, or is gone. */
  writable(): Promise<void>;
  /** The client is gone: the rest is not wanted. */
  readonly closed: boolean;
}

/** Deltas read in one event-loop turn when many arrive together. */
const deltasPerTurn = 256;
type Pending = Promise<Arrival>;

/**
 * The engine requests behind one HTTP request (one per prompt). Their delta streams are read
 * directly, merged in arrival order (the engine's stream is the only queue a token goes through);
 * all are aborted as soon as the client goes away (queued, prefilling or decoding), and latency
 * metrics are recorded as tokens arrive.
 */
export class Generation implements InFlightRequest {
  private readonly arrival = performance.now();
  private readonly streams: AsyncIterator<GenerateDelta>[] = [];
  /** The prompts whose streams have not ended. */
  private readonly unfinished = new Set<number>();
  /** Once read through deltas() or ready(): each unfinished stream's next result, read one ahead so that ready() can wait for the first. */
  private readonly pending = new Map<number, Pending>();
  private reading = false;
  /**
   * Results in the order they settled (an error as `failed`). One queue for every prompt, rather
   * than a Promise.race over all pending reads per delta: with 2048 prompts that race costs
   * O(prompts) per delta and leaves a reaction on every pending read each time.
   */
  private readonly arrived: ({ failed: false; arrival: Arrival } | { failed: true; error: unknown })[] = [];
  private wakeReader: (() => void) | null = null;
  private aborted = false;
  private abortedByShutdown = false;
  /** Aborted for running longer than --request-timeout. */
  timedOut = false;
  private timeout: NodeJS.Timeout | undefined;
  private disconnected = false;
  private readonly recorder: RequestMetricsRecorder;

  /** Starts every engine request, or none: an engine refusal (bad parameter, too long, overloaded) starts nothing and throws. */
  constructor(
    private readonly ctx: ServerContext,
    readonly requests: PromptRequest[],
    private readonly response: ServerResponse,
  ) {
    if (ctx.draining) throw engineUnavailable('The server is shutting down.');
    this.recorder = new RequestMetricsRecorder(ctx.metrics, requests.map((r) => r.promptTokenIds.length));
    try {
      const engineRequests = requests.map(({ promptParam: _, ...engineRequest }) => engineRequest);
      for (const stream of ctx.engine.generateMany(engineRequests)) this.streams.push(stream[Symbol.asyncIterator]());
    } catch (e) {
      throw namePromptParam(e, requests);
    }
    this.streams.forEach((_, i) => this.unfinished.add(i));
    const limit = ctx.http.requestTimeoutMs;
    if (limit !== null) {
      this.timeout = setTimeout(() => {
        this.timedOut = true;
        this.abort();
      }, limit);
    }
    if (ctx.inFlight.size === 0) ctx.busySince = Date.now();
    ctx.inFlight.add(this);
    if (response.destroyed || response.socket?.destroyed) this.onClose();
    else response.on('close', this.onClose);
  }

  /** Resolves once every engine request has produced its first delta; rejects with the first error. */
  async ready(): Promise<void> {
    this.startReading();
    await Promise.all(this.pending.values());
  }

  /** The client closed the connection before its answer was complete. */
  get clientGone(): boolean {
    return this.disconnected;
  }

  /** Every delta of every prompt, in the order they arrive. Leaving early aborts what is unfinished. */
  async *deltas(): AsyncGenerator<TaggedDelta> {
    this.startReading();
    let sinceTurn = 0;
    try {
      while (this.unfinished.size > 0) {
        while (this.arrived.length === 0) {
          sinceTurn = 0;
          await new Promise<void>((resolve) => (this.wakeReader = resolve));
        }
        // A step of a thousand prompts delivers a thousand deltas at once, and reading them is
        // all microtasks: let the event loop turn between runs of them (/health, other clients).
        if (++sinceTurn > deltasPerTurn) {
          sinceTurn = 0;
          await yieldToEventLoop();
        }
        const next = this.arrived.shift()!;
        if (next.failed) throw toApiError(next.error);
        const { prompt, result } = next.arrival;
        if (result.done) {
          this.pending.delete(prompt);
          this.promptEnded(prompt);
          continue;
        }
        this.readAhead(prompt);
        this.took(prompt, result.value);
        yield { prompt, delta: result.value };
      }
    } finally {
      this.dispose();
    }
  }

  /**
   * Every delta of every prompt handed to `sink` synchronously as the engine pushes it (no
   * promise or iterator step per token: a step's deltas are written in one pass), until every
   * prompt has ended; throws what deltas() throws. When the sink is full, delivery pauses (the
   * deltas queue in their streams) until it is writable again. Returning (the client gone, an
   * error) aborts what is unfinished. Engines whose streams cannot be listened to are read
   * through deltas().
   */
  async forward(sink: DeltaSink): Promise<void> {
    if (!this.streams.every((stream) => stream instanceof DeltaStream)) {
      for await (const { prompt, delta } of this.deltas()) {
        if (!sink.write(prompt, delta)) await sink.writable();
        if (sink.closed) break;
      }
      return;
    }
    try {
      while (this.unfinished.size > 0 && (await this.listenUntilPaused(sink)) === 'paused') {
        await sink.writable();
        if (sink.closed) return;
      }
    } finally {
      this.dispose();
    }
  }

  /** Aborts every unfinished engine request (their streams then end with an abort delta). */
  abort(): void {
    this.aborted = true;
    if (this.ctx.draining && !this.disconnected) this.abortedByShutdown = true;
    for (const prompt of this.unfinished) this.ctx.engine.abort(this.requests[prompt]!.id);
  }

  /** Ends the generation: aborts what is unfinished and records its latency. Safe to call more than once. */
  dispose(): void {
    if (!this.ctx.inFlight.has(this)) return;
    clearTimeout(this.timeout);
    if (this.unfinished.size > 0) this.abort();
    this.recorder.onDispose();
    this.response.off('close', this.onClose);
    this.ctx.inFlight.delete(this);
  }

  elapsedMs(): number {
    return performance.now() - this.arrival;
  }

  /**
   * One round of forward(): listens to every unfinished stream until all have ended ('ended') or
   * the sink is full ('paused'). The listeners run inside the engine's output processing, so
   * nothing here calls back into the engine: what follows runs when the promise settles.
   */
  private listenUntilPaused(sink: DeltaSink): Promise<'ended' | 'paused'> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const stop = (settle: () => void) => {
        if (settled) return;
        settled = true;
        for (const prompt of this.unfinished) (this.streams[prompt] as DeltaStream).unlisten();
        settle();
      };
      for (const prompt of [...this.unfinished]) {
        if (settled) break;
        (this.streams[prompt] as DeltaStream).listen({
          delta: (delta) => {
            try {
              this.took(prompt, delta);
              if (!sink.write(prompt, delta)) stop(() => resolve('paused'));
            } catch (e) {
              stop(() => reject(toApiError(e)));
            }
          },
          end: () => {
            this.promptEnded(prompt);
            if (this.unfinished.size === 0) stop(() => resolve('ended'));
          },
          fail: (error) => stop(() => reject(toApiError(error))),
        });
      }
      if (this.unfinished.size === 0) stop(() => resolve('ended'));
    });
  }

  /** A delta of `prompt` on its way to the client: its latency is recorded. */
  private took(prompt: number, delta: GenerateDelta): void {
    this.recorder.onDelta(prompt, delta);
    if (this.abortedByShutdown && delta.finishReason === 'abort') {
      // A status a router retries elsewhere, rather than a truncated answer it would pass on.
      throw engineUnavailable('The server shut down before this request finished; retry it on another replica.');
    }
  }

  private promptEnded(prompt: number): void {
    this.unfinished.delete(prompt);
    this.recorder.onPromptEnd(prompt);
  }

  private startReading(): void {
    if (this.reading) return;
    this.reading = true;
    for (const prompt of this.unfinished) this.readAhead(prompt);
  }

  private readAhead(prompt: number): void {
    const next: Pending = this.streams[prompt]!.next().then((result) => ({ prompt, result }));
    next.then(
      (arrival) => this.arrive({ failed: false, arrival }),
      (error: unknown) => this.arrive({ failed: true, error }),
    );
    this.pending.delete(prompt);
    this.pending.set(prompt, next);
  }

  private arrive(item: Generation['arrived'][number]): void {
    this.arrived.push(item);
    const wake = this.wakeReader;
    this.wakeReader = null;
    wake?.();
  }

  private readonly onClose = () => {
    if (this.response.writableFinished) return;
    this.disconnected = true;
    this.abort();
  };
}

/** The engine calls the prompt "prompt"; the client knows it by the field it sent. */
function namePromptParam(e: unknown, requests: PromptRequest[]): unknown {
  if (!(e instanceof InvalidRequestError) || e.param !== 'prompt' || e.requestIndex === null) return e;
  const error = toApiError(e);
  return invalidParam(requests[e.requestIndex]?.promptParam ?? 'prompt', e.message, error.code);
}
