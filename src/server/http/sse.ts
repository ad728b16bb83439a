import { once } from 'node:events';
import type { ServerResponse } from 'node:http';

/**
 * Server-sent events on a raw response: one `data:` event per call, waiting for the socket to
 * drain whenever the kernel buffer is full, so a slow client slows its own request only.
 */
export class SseWriter {
  constructor(private readonly response: ServerResponse) {}

  get closed(): boolean {
    return this.response.destroyed || this.response.writableEnded;
  }

  open(headers: Record<string, string> = {}): void {
    this.response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...headers,
    });
    this.response.flushHeaders();
  }

  async send(data: unknown): Promise<void> {
    await this.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  }

  /**
   * One event written now, without waiting: false when the client can take no more for now (the
   * kernel buffer is full: wait for writable() before the next) or is gone.
   */
  sendNow(data: unknown): boolean {
    if (this.closed) return false;
    return this.response.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`) && !this.closed;
  }

  /** Resolves once the socket has drained (at once if it need not), or the client is gone. */
  async writable(): Promise<void> {
    if (this.closed || !this.response.writableNeedDrain) return;
    await this.drainOrClose();
  }

  async done(): Promise<void> {
    await this.write('data: [DONE]\n\n');
    this.end();
  }

  end(): void {
    if (!this.closed) this.response.end();
  }

  private async write(chunk: string): Promise<void> {
    if (this.closed) return;
    if (this.response.write(chunk)) return;
    await this.drainOrClose();
  }

  private async drainOrClose(): Promise<void> {
    const cancel = new AbortController();
    const { signal } = cancel;
    const until = (event: string) => once(this.response, event, { signal }).catch(() => {});
    await Promise.race([until('drain'), until('close')]);
    cancel.abort();
  }
}

/**
 * Takes over the response for an event stream and runs `produce`; an error after the headers
 * went out is sent as one `data: {"error": ...}` event followed by `[DONE]`.
 */
export async function streamEvents(
  reply: { hijack(): unknown; raw: ServerResponse; getHeaders(): Record<string, unknown> },
  produce: (sse: SseWriter) => Promise<void>,
  toErrorBody: (e: unknown) => unknown,
): Promise<void> {
  // The headers hooks set on the reply (X-Request-Id, CORS) go out with the stream's.
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) headers[name] = String(value);
  reply.hijack();
  const sse = new SseWriter(reply.raw);
  if (sse.closed) return;
  sse.open(headers);
  try {
    await produce(sse);
    await sse.done();
  } catch (e) {
    await sse.send(toErrorBody(e));
    await sse.done();
  }
}
