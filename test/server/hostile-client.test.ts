import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, ForwardBatch } from '../../src/engine/backend.js';
import type { RunningServer } from '../../src/server/index.js';
import { expectKvFree, json, startTestServer, waitFor } from '../support/test-server.js';

// Issue 18's hostile-client findings, each with the request shape that showed it. The server runs
// one sequence at a time with four queue places, so "running" and "waiting" are easy to set up;
// its backend can be stopped before a given step (a gate) to look at what a client has by then.

const apiKey = 'sk-hostile';
const auth = { authorization: `Bearer ${apiKey}` };
let server: RunningServer;

/** Steps run until `closeAt` (a forward call number); then they wait for open(). */
const gate = {
  calls: 0,
  closeAt: Infinity,
  waiting: [] as (() => void)[],
  open() {
    this.closeAt = Infinity;
    for (const resume of this.waiting.splice(0)) resume();
  },
};

function gated(backend: Backend): Backend {
  return new Proxy(backend, {
    get(target, key, receiver) {
      if (key !== 'forward') return Reflect.get(target, key, receiver);
      return async (batch: ForwardBatch) => {
        if (++gate.calls >= gate.closeAt) await new Promise<void>((resume) => gate.waiting.push(resume));
        return target.forward(batch);
      };
    },
  });
}

beforeAll(async () => {
  // On the main thread whatever SLUICE_TEST_ENGINE_THREAD says: the backend is wrapped in place and the engine is called directly.
  server = await startTestServer({ apiKey, wrapBackend: gated, engine: { maxRunningRequests: 1, maxQueuedRequests: 4 }, engineThread: 'main' });
});

afterAll(async () => {
  gate.open();
  await server?.shutdown(5000);
});

function post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(body), signal });
}

const stats = () => server.context.engine.stats();

/** Reads SSE events as they arrive; `next()` gives the next data payload. */
function eventReader(response: Response) {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  return {
    async next(): Promise<string> {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          return event.replace(/^data: /, '');
        }
        const { value, done } = await reader.read();
        if (done) throw new Error('the stream ended');
        buffer += decoder.decode(value, { stream: true });
      }
    },
    cancel: () => reader.cancel(),
  };
}

/** Fails instead of waiting forever for something that should already be there. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms))]);
}

describe('item 8: streams open at once', () => {
  it('a chat stream sends its headers and role chunk before the first step finishes', async () => {
    gate.closeAt = gate.calls + 1;
    try {
      const response = await within(3000, 'response headers', post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, stream: true }));
      expect(response.status).toBe(200);
      const events = eventReader(response);
      const first = JSON.parse(await within(3000, 'the role chunk', events.next()));
      expect(first.choices[0].delta.role).toBe('assistant');
      gate.open();
      while ((await events.next()) !== '[DONE]');
    } finally {
      gate.open();
    }
  });

  it("a multi-prompt stream sends each prompt's tokens as they come, before the other prompts start", async () => {
    // One sequence runs at a time: prompt 1 waits until prompt 0 has finished. The gate stops
    // the engine while prompt 0 is decoding; its tokens so far must already be with the client.
    gate.closeAt = gate.calls + 4;
    try {
      const response = await post('/v1/completions', { prompt: ['first prompt', 'second prompt'], max_tokens: 20, ignore_eos: true, temperature: 0, stream: true });
      const events = eventReader(response);
      const first = JSON.parse(await within(3000, "prompt 0's first chunk", events.next()));
      expect(first.choices[0].index).toBe(0);
      expect(stats().waitingRequests).toBe(1);
      gate.open();
      let chunks = 1;
      while ((await events.next()) !== '[DONE]') chunks++;
      expect(chunks).toBe(40);
    } finally {
      gate.open();
    }
  });
});

describe('item 9: /flush_cache, Authorization, log-prob bytes and offsets', () => {
  it('/flush_cache refuses while a request waits (not only while one runs), in the OpenAI error shape', async () => {
    const engine = server.context.engine;
    const stream = engine.generate({ id: 'queued-only', promptTokenIds: [1, 2, 3], params: { maxNewTokens: 1 } });
    // Queued, not yet scheduled: nothing runs.
    expect(engine.stats().runningRequests).toBe(0);
    expect(engine.flushCache()).toBe(false);
    const refused = await fetch(`${server.url}/flush_cache`, { method: 'POST', headers: auth });
    expect(refused.status).toBe(400);
    const body = await json(refused);
    expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(body.error.message).toMatch(/running or waiting/);
    for await (const _ of stream);
    await expectKvFree(server.url, auth);
  });

  it('takes the Bearer scheme in any case', async () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
      const response = await fetch(`${server.url}/v1/models`, { headers: { authorization: `${scheme} ${apiKey}` } });
      expect({ scheme, status: response.status }).toEqual({ scheme, status: 200 });
    }
    expect((await fetch(`${server.url}/v1/models`, { headers: { authorization: `Basic ${apiKey}` } })).status).toBe(401);
  });
});

describe('item 12: chat content', () => {
  const tokens = async (messages: unknown[]) => (await json(post('/tokenize', { messages }))).tokens as number[];

  it('joins text content parts with a newline, as vLLM does', async () => {
    const parts = await tokens([{ role: 'user', content: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two' }] }]);
    expect(parts).toEqual(await tokens([{ role: 'user', content: 'one\ntwo' }]));
  });

  it('renders the developer role as the system prompt', async () => {
    const developer = await tokens([{ role: 'developer', content: 'be brief' }, { role: 'user', content: 'hi' }]);
    expect(developer).toEqual(await tokens([{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }]));
  });
});

describe('item 13: a duplicate rid', () => {
  it('is refused with 400 and leaves the request that owns it untouched', async () => {
    const owner = await post('/generate', { text: 'the owner', rid: 'idempotent-1', sampling_params: { max_new_tokens: 24, ignore_eos: true, temperature: 0 }, stream: true });
    const events = eventReader(owner);
    await events.next();
    for (const rid of ['idempotent-1', ['fresh-1', 'idempotent-1']]) {
      const text = Array.isArray(rid) ? ['a', 'b'] : 'again';
      const retry = await post('/generate', { text, rid, sampling_params: { max_new_tokens: 2 } });
      expect(retry.status).toBe(400);
      expect((await json(retry)).error.message).toMatch(/already in use/);
    }
    let last: any;
    for (let event = await events.next(); event !== '[DONE]'; event = await events.next()) last = JSON.parse(event);
    expect(last.meta_info.finish_reason.type).toBe('length');
    expect(last.meta_info.completion_tokens).toBe(24);
    await expectKvFree(server.url, auth);
  });
});

describe('item 14: multi-prompt admission is all or none', () => {
  it('a request that cannot fit now gets 503 with none of its prompts queued; one that never can gets 400', async () => {
    const running = await post('/v1/completions', { prompt: 'running', max_tokens: 30, ignore_eos: true, stream: true });
    const runningEvents = eventReader(running);
    await runningEvents.next();
    const waiting = post('/v1/completions', { prompt: 'waiting', max_tokens: 1 });
    await waitFor(async () => stats().waitingRequests === 1, 'one request waiting');
    const promptTokens = stats().promptTokensTotal;
    const busy = await post('/v1/completions', { prompt: ['a', 'b', 'c', 'd'], max_tokens: 1 });
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toBe('1');
    const never = await post('/v1/completions', { prompt: ['a', 'b', 'c'], n: 2, max_tokens: 1 });
    expect(never.status).toBe(400);
    expect((await json(never)).error.message).toMatch(/6 sequences .*holds 4/);
    expect(never.headers.get('retry-after')).toBeNull();
    // Nothing of either request reached the engine.
    expect(stats().promptTokensTotal).toBe(promptTokens);
    expect(stats().waitingRequests).toBe(1);
    expect((await waiting).status).toBe(200);
    while ((await runningEvents.next()) !== '[DONE]');
    await expectKvFree(server.url, auth);
  });
});
