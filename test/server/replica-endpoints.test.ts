import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { json, readEvents, startTestServer, waitFor } from '../support/test-server.js';

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer({ servedModelName: 'replica-a', engine: { pageSize: 4, maxRunningRequests: 64 } });
});

afterAll(async () => {
  await server?.shutdown(5000);
});

const get = (path: string) => fetch(`${server.url}${path}`);
const post = (path: string, body: unknown) =>
  fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** A /generate stream that runs until aborted, started and running. */
async function longStream(rid: string): Promise<Response> {
  const response = await post('/generate', { text: 'go on and on', rid, stream: true, sampling_params: { max_new_tokens: server.context.contextLength - 16, temperature: 0, ignore_eos: true } });
  expect(response.status).toBe(200);
  return response;
}

const finishReasons = (events: string[]) =>
  events
    .filter((e) => e !== '[DONE]')
    .map((e) => JSON.parse(e).meta_info.finish_reason)
    .filter((r) => r !== null);

describe('what SGLang model gateway and the vLLM production stack read from a replica', () => {
  it('/server_info and /get_server_info describe the replica', async () => {
    const info = await json(get('/server_info'));
    expect(await json(get('/get_server_info'))).toEqual(info);
    const stats = server.context.engine.stats();
    expect(info).toMatchObject({
      model_path: 'tiny',
      served_model_name: 'replica-a',
      max_total_tokens: stats.kvPagesTotal * 4,
      max_running_requests: 64,
      page_size: 4,
      dp_size: 1,
      tp_size: 1,
      context_length: server.context.contextLength,
      port: server.port,
    });
    expect(info.internal_states[0].max_total_num_tokens).toBe(info.max_total_tokens);
    expect(typeof info.version).toBe('string');
  });

  it('/model_info and /get_model_info agree; /v1/models lists the served name first', async () => {
    const info = await json(get('/model_info'));
    expect(await json(get('/get_model_info'))).toEqual(info);
    expect(info).toMatchObject({ model_path: 'tiny', served_model_name: 'replica-a', is_generation: true });
    expect((await json(get('/v1/models'))).data[0].id).toBe('replica-a');
  });

  it('/get_load is the array form, counting what runs and waits', async () => {
    const idle = await json(get('/get_load'));
    expect(idle).toEqual([{ dp_rank: 0, num_reqs: 0, num_waiting_reqs: 0, num_tokens: 0 }]);
    const stream = await longStream('load-1');
    await waitFor(async () => (await json(get('/get_load')))[0].num_tokens > 0, 'the request to hold KV');
    const busy = (await json(get('/get_load')))[0];
    expect(busy.num_reqs).toBe(1);
    expect(busy.num_waiting_reqs).toBe(0);
    expect(busy.num_tokens % 4).toBe(0);
    expect((await post('/abort_request', { rid: 'load-1' })).status).toBe(200);
    expect(finishReasons(await readEvents(stream))).toEqual([{ type: 'abort' }]);
  });

  it('/abort_request ends one request by rid, or all with abort_all; a body without either is a 400', async () => {
    const a = await longStream('abort-a');
    const b = await longStream('abort-b');
    const c = await longStream('abort-c');
    expect((await post('/abort_request', { rid: 'abort-b' })).status).toBe(200);
    expect(finishReasons(await readEvents(b))).toEqual([{ type: 'abort' }]);
    expect((await json(get('/get_load')))[0].num_reqs).toBe(2);
    expect((await post('/abort_request', { abort_all: true })).status).toBe(200);
    expect(finishReasons(await readEvents(a))).toEqual([{ type: 'abort' }]);
    expect(finishReasons(await readEvents(c))).toEqual([{ type: 'abort' }]);
    const bad = await post('/abort_request', {});
    expect(bad.status).toBe(400);
    expect((await json(bad)).error.param).toBe('rid');
    expect((await post('/abort_request', { rid: 'x', cancel: true })).status).toBe(400);
  });

  it('/readiness turns off when draining starts while /health (liveness) stays up', async () => {
    expect((await get('/readiness')).status).toBe(200);
    expect((await get('/health')).status).toBe(200);
    server.context.draining = true;
    try {
      const notReady = await get('/readiness');
      expect(notReady.status).toBe(503);
      expect((await json(notReady)).error.message).toMatch(/draining/);
      expect((await get('/health')).status).toBe(200);
      expect((await post('/generate', { text: 'hi', sampling_params: { max_new_tokens: 1 } })).status).toBe(503);
    } finally {
      server.context.draining = false;
    }
  });
});
