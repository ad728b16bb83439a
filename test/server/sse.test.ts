import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { SseWriter } from '../../src/server/http/sse.js';

/** An SSE stream on a loopback server whose client reads nothing yet. */
async function pausedStream(): Promise<{ server: Server; sse: SseWriter; client: IncomingMessage }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const serverSide = once(server, 'request') as Promise<[IncomingMessage, ServerResponse]>;
  const clientSide = new Promise<IncomingMessage>((resolve) => httpRequest({ port, host: '127.0.0.1', path: '/' }, resolve).end());
  const [, response] = await serverSide;
  const sse = new SseWriter(response);
  sse.open();
  const client = await clientSide;
  client.pause();
  return { server, sse, client };
}

/** Lets the client read: the blocked write completes, the stream ends, and everything read is returned. */
async function readToEnd(client: IncomingMessage, sse: SseWriter, blocked: Promise<void>): Promise<string> {
  let body = '';
  client.setEncoding('utf8');
  client.on('data', (chunk: string) => (body += chunk));
  client.resume();
  await blocked;
  await sse.done();
  await once(client, 'end');
  return body;
}

describe('SseWriter', () => {
  it('waits for a slow client to drain instead of buffering without bound', async () => {
    const { server, sse, client } = await pausedStream();
    // The client reads nothing: some send has to wait long before 64 MB are queued.
    const payload = 'x'.repeat(64 * 1024);
    let blocked: Promise<void> | null = null;
    let sent = 0;
    for (; sent < 1000 && blocked === null; sent++) {
      const pending = sse.send(payload);
      const settled = await Promise.race([pending.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 50))]);
      if (!settled) blocked = pending;
    }
    expect(blocked).not.toBeNull();
    expect(sent).toBeLessThan(1000);
    // Once the client reads, the waiting send completes and the stream ends with [DONE].
    const body = await readToEnd(client, sse, blocked!);
    expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(body.split('\n\n').length - 1).toBe(sent + 1);
    server.close();
  });

  it('sendNow says when the client is full; writable() waits until it has read, and everything arrives in order', async () => {
    const { server, sse, client } = await pausedStream();
    const payload = (i: number) => `${i}:${'x'.repeat(64 * 1024)}`;
    // The client reads nothing: once the kernel buffers are full too, writable() stays pending.
    let sent = 0;
    let blocked: Promise<void> | null = null;
    while (sent < 1000 && blocked === null) {
      if (sse.sendNow(payload(sent++))) continue;
      const writable = sse.writable();
      const settled = await Promise.race([writable.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 50))]);
      if (!settled) blocked = writable;
    }
    expect(blocked).not.toBeNull();
    expect(sent).toBeLessThan(1000);
    const body = await readToEnd(client, sse, blocked!);
    const events = body.split('\n\n').filter(Boolean);
    expect(events).toHaveLength(sent + 1);
    expect(events.slice(0, -1).map((e) => Number(e.slice('data: '.length).split(':')[0]))).toEqual(Array.from({ length: sent }, (_, i) => i));
    server.close();
  });
});
