import type { ServerResponse } from 'node:http';
import type { GenerateDelta, GenerateRequest } from '../engine/types.js';
import { AsyncQueue } from './async-queue.js';
import type { ServerContext } from './context.js';
import { engineUnavailable, toApiError } from './errors.js';

export interface TaggedDelta {
  /** Which of the group's engine requests (prompts) this delta belongs to. */
  prompt: number;
  delta: GenerateDelta;
}

type Item = TaggedDelta | { error: unknown };

/**
 * The engine requests behind one HTTP request (one per prompt), merged into one stream of deltas.
 * It aborts them all as soon as the client goes away (queued, prefilling or decoding) and records
 * latency metrics as tokens arrive.
 */
export class GenerationGroup {
  private readonly queue = new AsyncQueue<Item>();
  private readonly arrival = performance.now();
  private readonly unfinished = new Set<number>();
  private readonly started: Promise<void>;
  private aborted = false;
  private disconnected = false;
  private firstTokenSeen = false;
  private readonly lastTokenAt = new Map<string, number>();

  constructor(
    private readonly ctx: ServerContext,
    readonly requests: (GenerateRequest & { id: string })[],
    private readonly response: ServerResponse,
  ) {
    if (ctx.draining) throw engineUnavailable('The server is shutting down.');
    if (ctx.inFlight.size === 0) ctx.busySince = Date.now();
    ctx.inFlight.add(this);
    const readies: Promise<void>[] = [];
    requests.forEach((request, i) => {
      this.unfinished.add(i);
      readies.push(this.pump(i, request));
    });
    this.started = Promise.all(readies).then(() => undefined);
    this.started.catch(() => {});
    if (response.destroyed || response.socket?.destroyed) this.onClose();
    else response.on('close', this.onClose);
  }

  /** Resolves once every engine request has produced its first delta; rejects with the first error. */
  ready(): Promise<void> {
    return this.started;
  }

  /** The client closed the connection before its answer was complete. */
  get clientGone(): boolean {
    return this.disconnected;
  }

  async *deltas(): AsyncGenerator<TaggedDelta> {
    try {
      for await (const item of this.queue) {
        if ('error' in item) throw toApiError(item.error);
        yield item;
      }
    } finally {
      this.dispose();
    }
  }

  /** Aborts every unfinished engine request of the group (their streams then end). */
  abort(): void {
    this.aborted = true;
    for (const i of this.unfinished) this.ctx.engine.abort(this.requests[i]!.id);
  }

  private readonly onClose = () => {
    if (this.response.writableFinished) return;
    this.disconnected = true;
    this.abort();
  };

  private pump(i: number, request: GenerateRequest & { id: string }): Promise<void> {
    let signalReady!: () => void;
    let failReady!: (e: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      signalReady = resolve;
      failReady = reject;
    });
    void (async () => {
      let first = true;
      try {
        const deltas = request.params.maxNewTokens === 0 ? promptOnly(request) : this.ctx.engine.generate(request);
        for await (const delta of deltas) {
          this.observe(delta);
          this.queue.push({ prompt: i, delta });
          if (first) signalReady();
          first = false;
        }
        signalReady();
      } catch (e) {
        failReady(e);
        this.queue.push({ error: e });
        this.abort();
      } finally {
        this.unfinished.delete(i);
        if (this.unfinished.size === 0) this.queue.close();
      }
    })();
    return ready;
  }

  private observe(delta: GenerateDelta): void {
    const now = performance.now();
    const metrics = this.ctx.metrics;
    if (delta.tokenIds.length > 0) {
      if (!this.firstTokenSeen) {
        this.firstTokenSeen = true;
        metrics.timeToFirstToken.observe((now - this.arrival) / 1000);
      }
      const key = `${delta.requestId}/${delta.index}`;
      const last = this.lastTokenAt.get(key);
      if (last !== undefined) metrics.interTokenLatency.observe((now - last) / 1000);
      this.lastTokenAt.set(key, now);
    }
    if (delta.finishReason !== null) metrics.recordFinish(delta.finishReason);
  }

  /** Ends the group: aborts what is unfinished and records its latency. Safe to call more than once. */
  dispose(): void {
    if (!this.ctx.inFlight.has(this)) return;
    if (this.unfinished.size > 0) this.abort();
    if (!this.aborted) this.ctx.metrics.e2eLatency.observe(this.elapsedMs() / 1000);
    this.response.off('close', this.onClose);
    this.ctx.inFlight.delete(this);
  }

  elapsedMs(): number {
    return performance.now() - this.arrival;
  }
}

/**
 * max_tokens 0 (SGLang accepts it; its benchmark's random dataset asks for it): every sample
 * finishes at once with no tokens, without troubling the engine.
 */
function promptOnly(request: GenerateRequest & { id: string }): GenerateDelta[] {
  const n = request.params.n ?? 1;
  return Array.from({ length: n }, (_, index) => ({
    requestId: request.id,
    index,
    text: '',
    tokenIds: [],
    logprobs: request.params.logprobs != null ? [] : null,
    finishReason: 'length' as const,
    matchedStop: null,
    usage: { promptTokens: request.promptTokenIds.length, completionTokens: 0, cachedTokens: 0 },
  }));
}
