import { Worker } from 'node:worker_threads';
import type { GrammarSpec } from '../engine/types.js';
import type { FillRow, MaskReply, MaskRequest } from './mask-protocol.js';
import type { GrammarVocabulary } from './tokenizer-info.js';

type Pending = { resolve(value: number | undefined): void; reject(e: Error): void };
type RequestBody = MaskRequest extends infer R ? (R extends MaskRequest ? Omit<R, 'call'> : never) : never;

/**
 * The engine thread's side of the mask worker (src/grammar/mask-worker-thread.ts): it mirrors the
 * constrained sequences' matchers and fills a step's masks into a SharedArrayBuffer that the
 * backend reads, so that the masks are computed on another core while the backend runs the step.
 * Once the worker fails, every call rejects and the caller computes masks itself.
 */
export class MaskWorker {
  private readonly pending = new Map<number, Pending>();
  private calls = 0;
  private failure: Error | null = null;
  private shared = new SharedArrayBuffer(0);

  private constructor(private readonly worker: Worker) {
    worker.on('message', (reply: MaskReply) => {
      const waiter = this.pending.get(reply.call);
      this.pending.delete(reply.call);
      if (this.pending.size === 0) worker.unref();
      if (reply.error !== undefined) waiter?.reject(new Error(reply.error));
      else waiter?.resolve(reply.value);
    });
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => this.fail(new Error(`the mask worker exited (code ${code})`)));
    worker.unref(); // an idle worker must not keep the process alive; one with a request pending does
  }

  /** Starts the worker and loads the vocabulary there; rejects when it cannot start. */
  static async start(vocab: GrammarVocabulary, stopTokenIds: readonly number[]): Promise<MaskWorker> {
    const client = new MaskWorker(new Worker(new URL('./mask-worker-entry.mjs', import.meta.url)));
    try {
      await client.request({ op: 'init', vocab, stopTokenIds: [...stopTokenIds] });
    } catch (e) {
      await client.close();
      throw e;
    }
    return client;
  }

  get failed(): boolean {
    return this.failure !== null;
  }

  /** Creates the worker's copy of matcher `id` (compiling `spec` there, once per grammar text). */
  async add(id: number, spec: GrammarSpec, stopTokenIds: readonly number[]): Promise<void> {
    await this.request({ op: 'add', id, spec, stopTokenIds: [...stopTokenIds] });
  }

  drop(id: number): void {
    if (!this.failure) this.worker.postMessage({ call: 0, op: 'drop', id } satisfies MaskRequest);
  }

  /**
   * `length` words of shared memory for a step's masks: the same memory every step (grown when a
   * step needs more), since a step's masks are read before the next step's are computed.
   */
  maskWords(length: number): Int32Array {
    if (this.shared.byteLength < length * 4) this.shared = new SharedArrayBuffer(Math.max(length * 4, this.shared.byteLength * 2));
    return new Int32Array(this.shared, 0, length);
  }

  /** Replays each row's journal on the worker's copy and writes its mask into maskWords' memory; resolves with the worker's compute time in ms. */
  async fill(rows: FillRow[], words: number): Promise<number> {
    return (await this.request({ op: 'fill', buffer: this.shared, words, rows }))!;
  }

  async close(): Promise<void> {
    this.fail(new Error('the mask worker was closed'));
    await this.worker.terminate();
  }

  private request(body: RequestBody): Promise<number | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    const call = ++this.calls;
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(call, { resolve, reject });
      this.worker.postMessage({ ...body, call } as MaskRequest);
    });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const waiter of this.pending.values()) waiter.reject(this.failure);
    this.pending.clear();
    this.worker.unref();
  }
}
