import type { GenerateDelta } from './types.js';

/**
 * The async stream of one request's deltas. The engine pushes; the consumer iterates. A consumer
 * that stops early (break, return) calls `onCancel`, which aborts the request.
 */
export class DeltaStream implements AsyncIterable<GenerateDelta> {
  private readonly queue: GenerateDelta[] = [];
  private ended = false;
  private error: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(private readonly onCancel: () => void) {}

  push(delta: GenerateDelta): void {
    this.queue.push(delta);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(error: Error): void {
    this.error = error;
    this.ended = true;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerateDelta> {
    let finished = false;
    try {
      for (;;) {
        while (this.queue.length > 0) yield this.queue.shift()!;
        if (this.error) throw this.error;
        if (this.ended) break;
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
      finished = true;
    } finally {
      if (!finished && !this.ended) this.onCancel();
    }
  }
}
