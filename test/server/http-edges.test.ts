import { execFile } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, type RunningServer } from '../../src/server/index.js';
import { generationBodyLimit } from '../../src/server/http/settings.js';
import { HookedBackend } from '../support/hooked-backend.js';
import { expectKvFree, json, readEvents, startTestServer } from '../support/test-server.js';

// Issue 18 items 10, 16, 18 and 21: the HTTP layer against slow, odd and hostile clients, CORS,
// X-Request-Id, the per-request timeout and JSON-lines request logs.

const logLines: string[] = [];
let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer({
    engine: { contextLength: 512 },
    http: { allowedOrigins: ['https://app.example'], headersTimeoutMs: 400, bodyTimeoutMs: 800, keepAliveTimeoutMs: 400, requestTimeoutMs: 1500, logFormat: 'json' },
    log: createLogger('info', (line) => logLines.push(line), 'json'),
    logRequests: true,
  });
});

afterAll(async () => {
  await server?.shutdown(5000);
});

/** Sends raw bytes; resolves with what came back once the server closes the connection (or after `waitMs`). */
function raw(text: string | Buffer, waitMs = 5000): Promise<{ status: number; body: any; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(server.port, '127.0.0.1');
    let received = '';
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      const [head, ...rest] = received.split('\r\n\r\n');
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head ?? '')?.[1] ?? 0);
      const text = rest.join('\r\n\r\n');
      let body: any = text;
      try {
        body = JSON.parse(text);
      } catch {}
      resolve({ status, body, closed });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on('data', (chunk) => (received += chunk.toString()));
    socket.on('close', () => finish(true));
    socket.on('error', reject);
    socket.write(text);
  });
}

function expectOpenAiError(body: any): void {
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
}

/** Resolves when the server closes `socket`. */
function closedBy(socket: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

const completion = JSON.stringify({ prompt: 'hi', max_tokens: 1 });

describe('item 18: HTTP edge cases', () => {
  it('refuses transfer and content codings it does not decode', async () => {
    const gzipChunked = await raw(
      `POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nContent-Type: application/json\r\n\r\n${completion.length.toString(16)}\r\n${completion}\r\n0\r\n\r\n`,
    );
    expect(gzipChunked.status).toBe(400);
    expectOpenAiError(gzipChunked.body);
    expect(gzipChunked.body.error.message).toMatch(/Transfer-Encoding/);
    const gzip = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: completion });
    expect(gzip.status).toBe(415);
    expectOpenAiError(await json(gzip));
  });

  it('answers HTTP-parser errors (400, 431) in the OpenAI error shape', async () => {
    const malformed = await raw('GARBAGE\r\n\r\n');
    expect(malformed.status).toBe(400);
    expectOpenAiError(malformed.body);
    const huge = await raw(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(huge.status).toBe(431);
    expectOpenAiError(huge.body);
  });

  it('says a body was refused for a forbidden key', async () => {
    const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt": "hi", "__proto__": {"x": 1}}' });
    expect(response.status).toBe(400);
    const body = await json(response);
    expectOpenAiError(body);
    expect(body.error.message).toMatch(/__proto__/);
  });

  it('closes connections that are slow to send headers, slow to send a body, or idle', async () => {
    const slowHeaders = await raw('POST /v1/completions HTTP/1.1\r\nHost: x\r\n', 4000);
    expect(slowHeaders.closed).toBe(true);
    const slowBody = await raw(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"prompt": `, 4000);
    expect(slowBody.closed).toBe(true);
    expect(slowBody.status).toBe(408);
    const idle = connect(server.port, '127.0.0.1');
    idle.resume(); // read, so that the server's FIN is seen
    idle.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await closedBy(idle, 4000)).toBe(true);
  });
});

/**
 * Sends `count` complete GET /health requests at once, each on its own connection, from another
 * process (so this one may block); resolves with the status of each.
 */
function burstFromAnotherProcess(count: number): Promise<number[]> {
  const client = `
    const net = require('node:net');
    const statuses = [];
    for (let i = 0; i < ${count}; i++) {
      const socket = net.connect(${server.port}, '127.0.0.1');
      socket.write('GET /health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n');
      let text = '';
      socket.on('data', (d) => (text += d));
      socket.on('error', () => {});
      socket.on('close', () => {
        statuses.push(Number(text.split(' ')[1] ?? 0));
        if (statuses.length === ${count}) console.log(JSON.stringify(statuses));
      });
    }`;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['-e', client], { timeout: 20_000 }, (error, stdout) => (error ? reject(error) : resolve(JSON.parse(stdout)))),
  );
}

describe('issue 17: timeouts of the server\'s own making', () => {
  it('requests already sent while the HTTP thread was too busy to read them past the header and body timeouts are served, not answered 408', async () => {
    // The burst's first connection is accepted, then this thread is busy for longer than both
    // timeouts (400 and 800 ms here) before it reads anything: as a thousand streams' writes
    // and a burst of new requests keep a loaded machine's HTTP thread.
    let blocked = false;
    const block = () => {
      if (blocked) return;
      blocked = true;
      setImmediate(() => {
        const until = Date.now() + 1200;
        while (Date.now() < until);
      });
    };
    server.app.server.on('connection', block);
    try {
      const statuses = await burstFromAnotherProcess(20);
      expect(blocked).toBe(true);
      expect(statuses).toEqual(Array(20).fill(200));
    } finally {
      server.app.server.off('connection', block);
    }
  });
});

describe('item 10: what one request may bring', () => {
  it('bounds the body by what the context can hold (413), and text far beyond the context is refused before tokenizing', async () => {
    const limit = generationBodyLimit(512, server.context.tokenText.maxTokenBytes);
    const tooBig = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'a'.repeat(limit) }) });
    expect(tooBig.status).toBe(413);
    expectOpenAiError(await json(tooBig));
    // Fits the body limit, but no tokenization of it could fit 512 tokens.
    const farTooLong = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'word '.repeat(Math.floor(limit / 6)) }) });
    expect(farTooLong.status).toBe(400);
    const body = await json(farTooLong);
    expect(body.error.code).toBe('context_length_exceeded');
  });
});

describe('item 21: CORS, X-Request-Id, request timeout, JSON logs', () => {
  it('answers CORS preflights for allowed origins only, and streams carry the CORS headers', async () => {
    const preflight = (origin: string) =>
      fetch(`${server.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' } });
    const allowed = await preflight('https://app.example');
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect((await preflight('https://evil.example')).headers.get('access-control-allow-origin')).toBeNull();
    const stream = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { origin: 'https://app.example' }, body: JSON.stringify({ prompt: 'hi', max_tokens: 2, stream: true }) });
    expect(stream.headers.get('access-control-allow-origin')).toBe('https://app.example');
    await readEvents(stream);
  });

  it('echoes X-Request-Id on every route (or makes one up)', async () => {
    const answers = [
      await fetch(`${server.url}/health`, { headers: { 'x-request-id': 'req-health' } }),
      await fetch(`${server.url}/v1/models`, { headers: { 'x-request-id': 'req-models' } }),
      await fetch(`${server.url}/nowhere`, { headers: { 'x-request-id': 'req-404' } }),
      await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'x-request-id': 'req-400' }, body: '{"prompt": 1.5}' }),
      await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'x-request-id': 'req-json' }, body: completion }),
      await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'x-request-id': 'req-sse' }, body: JSON.stringify({ prompt: 'hi', max_tokens: 1, stream: true }) }),
    ];
    expect(answers.map((a) => a.headers.get('x-request-id'))).toEqual(['req-health', 'req-models', 'req-404', 'req-400', 'req-json', 'req-sse']);
    await Promise.all(answers.map((a) => a.text()));
    expect((await fetch(`${server.url}/health`)).headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('--request-timeout aborts a generation that runs too long and frees its KV', async () => {
    const response = await json(fetch(`${server.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'go on', max_tokens: 400, ignore_eos: true }) }));
    expect(response.choices[0].finish_reason).toBe('abort');
    expect(response.usage.completion_tokens).toBeLessThan(400);
    await expectKvFree(server.url);
  });

  it('writes request logs as JSON lines with the request id', async () => {
    logLines.length = 0;
    await (await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'x-request-id': 'req-logged' }, body: completion })).text();
    const entries = logLines.map((line) => JSON.parse(line));
    const entry = entries.find((e) => e.request_id === 'req-logged');
    expect(entry).toMatchObject({ level: 'info', route: 'completions', prompt_tokens: expect.any(Number), completion_tokens: 1, outcome: 'done' });
  });
});

describe('item 16: shutdown', () => {
  it('closes idle keep-alive connections and returns as soon as the last request ends', async () => {
    const other = await startTestServer({ http: { keepAliveTimeoutMs: 60_000 } });
    // An idle keep-alive connection, and one carrying a stream.
    const idle = connect(other.port, '127.0.0.1');
    idle.write('GET /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
    await new Promise((resolve) => idle.once('data', resolve));
    const stream = await fetch(`${other.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'drain me', max_tokens: 20, ignore_eos: true, stream: true }) });
    const events = readEvents(stream);
    const idleClosed = closedBy(idle, 5000);
    const started = Date.now();
    let streamEndedAt = 0;
    void events.then(() => (streamEndedAt = Date.now()));
    await other.shutdown(30_000);
    const finished = Date.now();
    expect(await idleClosed).toBe(true);
    const all = await events;
    expect(all.at(-1)).toBe('[DONE]');
    expect(JSON.parse(all.at(-2)!).choices[0].finish_reason).toBe('length');
    // Down within moments of the stream's end: nowhere near the keep-alive or drain timeouts.
    expect(finished - Math.max(streamEndedAt, started)).toBeLessThan(2000);
  });

  it('keeps listening while a request is in flight: /readiness 503, /health 200, new generations 503; then stops listening', async () => {
    let release!: () => void;
    const stepGate = new Promise<void>((resolve) => (release = resolve));
    // Every step after the first waits for the gate, so the request stays in flight while the test probes.
    const other = await startTestServer({ engineThread: 'main', wrapBackend: (b) => new HookedBackend(b, (_batch, call) => (call > 1 ? stepGate : undefined)) });
    const get = (path: string) => fetch(`${other.url}${path}`);
    try {
      const stream = await fetch(`${other.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'drain me', max_tokens: 4, ignore_eos: true, stream: true }) });
      expect(stream.status).toBe(200);
      const events = readEvents(stream);
      const down = other.shutdown(30_000);
      let isDown = false;
      void down.then(() => (isDown = true));
      const notReady = await get('/readiness');
      expect(notReady.status).toBe(503);
      expect((await json(notReady)).error.message).toMatch(/draining/);
      expect((await get('/health')).status).toBe(200);
      const refused = await fetch(`${other.url}/generate`, { method: 'POST', body: JSON.stringify({ text: 'late', sampling_params: { max_new_tokens: 1 } }) });
      expect(refused.status).toBe(503);
      await refused.text();
      expect(isDown).toBe(false);
      release();
      const all = await events;
      expect(all.at(-1)).toBe('[DONE]');
      expect(JSON.parse(all.at(-2)!).choices[0].finish_reason).toBe('length');
      await down;
      await expect(get('/health')).rejects.toThrow();
    } finally {
      release();
      await other.shutdown(1000);
    }
  });
});
