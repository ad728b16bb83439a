import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { startTestServer } from '../support/test-server.js';

// A client that stops reading mid-stream: the server's writes must pause (deltas wait in the
// engine's stream, not in an unbounded socket buffer) and resume in order once it reads again.
// /generate streams cumulative chunks (every chunk carries all ids so far), so 1500 tokens make
// ~10 MB: far more than the socket buffers hold.

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer({ instant: true });
});

afterAll(async () => {
  await server?.shutdown(5000);
});

describe('streaming to a client that stops reading', () => {
  it('pauses, then delivers every chunk in order once the client reads again', async () => {
    const n = 1500;
    const body = JSON.stringify({ text: 'Back pressure', sampling_params: { max_new_tokens: n, temperature: 0, ignore_eos: true }, stream: true });
    const url = new URL(`${server.url}/generate`);
    const serverSide = once(server.app.server, 'request') as Promise<[IncomingMessage, ServerResponse]>;
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json' } }, resolve);
      req.on('error', reject);
      req.end(body);
    });
    expect(response.statusCode).toBe(200);
    response.pause();
    const [, serverResponse] = await serverSide;
    // While the client reads nothing, the server holds at most a few frames beyond what the
    // kernel took (without the pause it would have queued all ~10 MB of frames by now).
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(serverResponse.writableFinished).toBe(false);
    expect(serverResponse.writableLength).toBeLessThan(1_000_000);
    let text = '';
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => (text += chunk));
    response.resume();
    await once(response, 'end');
    const events = text.split('\n\n').filter((e) => e.trim() !== '');
    expect(events.at(-1)).toBe('data: [DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice('data: '.length)));
    expect(chunks).toHaveLength(n);
    chunks.forEach((chunk, i) => expect(chunk.output_ids).toHaveLength(i + 1));
    expect(chunks.at(-1).output_ids.slice(0, 100)).toEqual(chunks[99].output_ids);
    expect(chunks.at(-1).meta_info.finish_reason).toEqual({ type: 'length', length: n });
  });
});
