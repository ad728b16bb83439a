import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { json, readEvents, startTestServer, waitFor } from '../support/test-server.js';

// The same seeded request streamed and not: the non-streamed response must be exactly what a
// client gets by putting the streamed chunks together (per choice: texts and log-probs
// concatenated, the last finish reason; the usage chunk's usage). Each request starts with an
// empty prefix cache, so that cached_tokens agree too.

let server: RunningServer;
async function post(path: string, body: unknown): Promise<Response> {
  await waitFor(async () => (await fetch(`${server.url}/flush_cache`, { method: 'POST' })).status === 200, 'an idle engine');
  return fetch(`${server.url}${path}`, { method: 'POST', body: JSON.stringify(body) });
}

async function streamed(path: string, body: object): Promise<any[]> {
  const response = await post(path, { ...body, stream: true });
  expect(response.status).toBe(200);
  const events = await readEvents(response);
  expect(events.at(-1)).toBe('[DONE]');
  return events.slice(0, -1).map((e) => JSON.parse(e));
}

/** Sorted by index, whatever order the samples' chunks arrived in. */
function byIndex<T extends { index: number }>(choices: Map<number, T>): T[] {
  return [...choices.values()].sort((a, b) => a.index - b.index);
}

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.shutdown(5000);
});

describe('non-streamed responses are the fold of the streamed chunks', () => {
  it('/v1/completions: two prompts, n = 2, log-probs', async () => {
    const request = { prompt: ['The fold of', 'a stream is'], n: 2, max_tokens: 6, temperature: 0.9, seed: 11, logprobs: 2, stream_options: { include_usage: true } };
    const chunks = await streamed('/v1/completions', request);
    const choices = new Map<number, any>();
    let usage = null;
    for (const chunk of chunks) {
      expect(chunk.object).toBe('text_completion');
      if (chunk.usage) usage = chunk.usage;
      for (const part of chunk.choices) {
        const choice = choices.get(part.index) ?? { index: part.index, text: '', logprobs: { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] }, finish_reason: null };
        choices.set(part.index, choice);
        choice.text += part.text;
        for (const key of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']) choice.logprobs[key].push(...part.logprobs[key]);
        if (part.finish_reason !== null) Object.assign(choice, { finish_reason: part.finish_reason, matched_stop: part.matched_stop });
      }
    }
    const { stream_options: _, ...plain } = request;
    const whole = await json(post('/v1/completions', plain));
    expect(whole.choices).toHaveLength(4);
    expect(whole.choices).toEqual(byIndex(choices));
    expect(whole.usage).toEqual(usage);
    expect(whole.choices.every((c: any) => c.logprobs.tokens.length === 6)).toBe(true);
  });

  it('/v1/chat/completions: n = 3, log-probs', async () => {
    const request = { messages: [{ role: 'user', content: 'Fold me' }], n: 3, max_tokens: 5, temperature: 0.9, seed: 5, logprobs: true, top_logprobs: 2, stream_options: { include_usage: true } };
    const chunks = await streamed('/v1/chat/completions', request);
    const choices = new Map<number, any>();
    let usage = null;
    for (const chunk of chunks) {
      expect(chunk.object).toBe('chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const part of chunk.choices) {
        const choice = choices.get(part.index) ?? { index: part.index, message: { role: null, content: '' }, logprobs: { content: [] }, finish_reason: null };
        choices.set(part.index, choice);
        if (part.delta.role) choice.message.role = part.delta.role;
        choice.message.content += part.delta.content ?? '';
        choice.logprobs.content.push(...(part.logprobs?.content ?? []));
        if (part.finish_reason !== null) Object.assign(choice, { finish_reason: part.finish_reason, matched_stop: part.matched_stop });
      }
    }
    const { stream_options: _, ...plain } = request;
    const whole = await json(post('/v1/chat/completions', plain));
    expect(whole.object).toBe('chat.completion');
    expect(whole.choices).toHaveLength(3);
    expect(whole.choices).toEqual(byIndex(choices));
    expect(whole.usage).toEqual(usage);
  });

  it('/generate: two prompts, n = 2, log-probs (chunks are cumulative: the last one of each output is the output)', async () => {
    const request = {
      text: ['Cumulative', 'chunks'],
      rid: ['first', 'second'],
      return_logprob: true,
      top_logprobs_num: 2,
      sampling_params: { n: 2, max_new_tokens: 5, temperature: 0.9, seed: 3 },
    };
    const chunks = await streamed('/generate', request);
    const outputs = new Map<number, any>();
    for (const { index, ...chunk } of chunks) {
      const before = outputs.get(index);
      if (before) expect(chunk.output_ids.slice(0, before.output_ids.length)).toEqual(before.output_ids);
      outputs.set(index, chunk);
    }
    const whole = await json(post('/generate', request));
    expect(whole).toHaveLength(4);
    const withoutLatency = (o: any) => ({ ...o, meta_info: { ...o.meta_info, e2e_latency: 0 } });
    expect(whole.map(withoutLatency)).toEqual([0, 1, 2, 3].map((i) => withoutLatency(outputs.get(i))));
    expect(whole.every((o: any) => o.meta_info.output_token_logprobs.length === o.output_ids.length)).toBe(true);
  });
});
