import { Worker } from 'node:worker_threads';
import type { Tokenizer } from '../model/tokenizer.js';

/**
 * Prompt text to token ids for the routes. A long text (an 8K-token prompt takes 100-300 ms to
 * encode) goes to a tokenizer thread, so the HTTP thread keeps streaming everyone else's tokens
 * meanwhile; short ones are encoded in place, where the thread hop would cost more than it saves.
 */
export class PromptEncoder {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(ids: number[]): void; reject(e: Error): void }>();

  /** `thread` false: everything is encoded in place (no thread is started). Otherwise the thread starts now, so no request waits for it to load. */
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly options: { thread: boolean; minThreadChars?: number } = { thread: false },
  ) {
    if (options.thread) this.start();
  }

  encode(text: string, addSpecialTokens = true): Promise<number[]> {
    if (!this.options.thread || text.length < (this.options.minThreadChars ?? defaultMinThreadChars)) {
      return Promise.resolve(this.tokenizer.encode(text, addSpecialTokens));
    }
    const worker = this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, text, addSpecialTokens });
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    await worker?.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL('./tokenizer-worker.mjs', import.meta.url), { workerData: { json: this.tokenizer.json, config: this.tokenizer.config } });
    worker.unref();
    worker.on('message', (message: { id: number; ids?: Int32Array; error?: string }) => {
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.ids) waiter?.resolve(Array.from(message.ids));
      else waiter?.reject(new Error(`tokenizer thread: ${message.error}`));
    });
    // A broken thread must not break requests: fall back to encoding in place.
    worker.on('error', () => this.failOver());
    worker.on('exit', () => this.failOver());
    this.worker = worker;
    return worker;
  }

  private failOver(): void {
    this.worker = null;
    this.options.thread = false;
    for (const waiter of this.pending.values()) waiter.reject(new Error('the tokenizer thread stopped'));
    this.pending.clear();
  }
}

/**
 * About 4000 tokens of English. Shorter texts (ShareGPT prompts are at most ~1000 tokens) take a
 * few milliseconds in place, less than a queue behind one thread would add.
 */
const defaultMinThreadChars = 16_384;
