import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { expectKvFree, json, startTestServer } from '../support/test-server.js';

let server: RunningServer;
let client: OpenAI;
let model: string;

beforeAll(async () => {
  server = await startTestServer();
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  model = (await client.models.list()).data[0]!.id;
});

afterAll(async () => {
  await server?.shutdown(5000);
});

describe('the official openai client', () => {
  it('lists the served model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['tiny']);
  });

  it('completes without streaming, with usage and finish_reason length at max_tokens', async () => {
    const completion = await client.completions.create({ model, prompt: 'The capital of France is', max_tokens: 5, temperature: 0 });
    expect(completion.object).toBe('text_completion');
    expect(completion.id).toMatch(/^cmpl-/);
    expect(completion.choices).toHaveLength(1);
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('length');
    expect(choice.text.length).toBeGreaterThan(0);
    const promptTokens = (await json(fetch(`${server.url}/tokenize`, { method: 'POST', body: JSON.stringify({ prompt: 'The capital of France is' }) }))).count;
    expect(completion.usage).toMatchObject({ prompt_tokens: promptTokens, completion_tokens: 5, total_tokens: promptTokens + 5 });
  });

  it('streams one event per token whose texts add up to the non-streamed text, then usage when asked', async () => {
    const request = { model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, ignore_eos: true } as const;
    const whole = await client.completions.create(request as OpenAI.CompletionCreateParamsNonStreaming);
    const stream = await client.completions.create({ ...request, stream: true, stream_options: { include_usage: true } } as OpenAI.CompletionCreateParamsStreaming);
    const chunks: OpenAI.Completion[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const tokenChunks = chunks.filter((c) => c.choices.length > 0);
    expect(tokenChunks).toHaveLength(6);
    expect(tokenChunks.map((c) => c.choices[0]!.text).join('')).toBe(whole.choices[0]!.text);
    expect(tokenChunks.slice(0, -1).every((c) => c.choices[0]!.finish_reason === null)).toBe(true);
    expect(tokenChunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ prompt_tokens: whole.usage!.prompt_tokens, completion_tokens: 6 });
    expect(tokenChunks.every((c) => c.usage === null)).toBe(true);
  });

  it('sends no usage chunk unless include_usage is asked', async () => {
    const stream = await client.completions.create({ model, prompt: 'Hello', max_tokens: 3, temperature: 0, stream: true });
    const chunks: OpenAI.Completion[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks).toHaveLength(3);
    expect(chunks.every((c) => c.choices.length === 1 && c.usage === undefined)).toBe(true);
  });

  it('gives n=2 choices with their indexes, streaming and not', async () => {
    const completion = await client.completions.create({ model, prompt: 'Hello', max_tokens: 4, n: 2, seed: 7, top_k: 20 } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(completion.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(completion.usage!.completion_tokens).toBe(8);
    const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3, n: 2, stream: true, seed: 3, top_k: 20 } as OpenAI.ChatCompletionCreateParamsStreaming);
    const contents = ['', ''];
    const finishes: (string | null)[] = [null, null];
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        contents[choice.index] += choice.delta.content ?? '';
        if (choice.finish_reason) finishes[choice.index] = choice.finish_reason;
      }
    }
    expect(finishes).toEqual(['length', 'length']);
    expect(contents.every((c) => c.length > 0)).toBe(true);
  });

  it('is reproducible with a seed', async () => {
    const request = { model, prompt: 'Seeded', max_tokens: 8, temperature: 1, top_k: 20, seed: 1234, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming;
    const [a, b] = await Promise.all([client.completions.create(request), client.completions.create(request)]);
    expect(a.choices[0]!.text).toBe(b.choices[0]!.text);
  });

  it('stops at a stop string, which is not returned', async () => {
    const request = { model, prompt: 'A stop test', max_tokens: 12, temperature: 0, ignore_eos: true };
    const free = await client.completions.create({ ...request, logprobs: 0 });
    const tokens = free.choices[0]!.logprobs!.tokens!;
    // A stop string from the 4th generated token on: generation must end just before it.
    const stop = tokens.slice(3, 5).join('');
    const fullText = free.choices[0]!.text;
    const expected = fullText.slice(0, fullText.indexOf(stop));
    const stopped = await client.completions.create({ ...request, stop: [stop] });
    expect(stopped.choices[0]!.finish_reason).toBe('stop');
    expect(stopped.choices[0]!.text).toBe(expected);
    const streamed = await client.completions.create({ ...request, stop, stream: true });
    let text = '';
    let finish: string | null = null;
    for await (const chunk of streamed) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(expected);
    expect(finish).toBe('stop');
  });

  it('returns completion log-probs in the OpenAI shape', async () => {
    const completion = await client.completions.create({ model, prompt: 'Log probs', max_tokens: 4, temperature: 0, logprobs: 3 });
    const logprobs = completion.choices[0]!.logprobs!;
    expect(logprobs.tokens).toHaveLength(4);
    expect(logprobs.tokens!.join('')).toBe(completion.choices[0]!.text);
    expect(logprobs.token_logprobs!.every((x) => x <= 0)).toBe(true);
    expect(logprobs.top_logprobs!.every((top) => Object.keys(top).length >= 1 && Object.keys(top).length <= 3)).toBe(true);
    // Greedy: the chosen token is the most likely one.
    logprobs.top_logprobs!.forEach((top, i) => expect(Math.max(...Object.values(top))).toBeCloseTo(logprobs.token_logprobs![i]!, 4));
    expect(logprobs.text_offset).toEqual([0, ...logprobs.tokens!.slice(0, -1).map((_, i) => logprobs.tokens!.slice(0, i + 1).join('').length)]);
  });

  it('chats without streaming, with log-probs and top_logprobs', async () => {
    const chat = await client.chat.completions.create({
      model,
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Say something.' },
      ],
      max_tokens: 4,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    });
    expect(chat.object).toBe('chat.completion');
    expect(chat.id).toMatch(/^chatcmpl-/);
    const choice = chat.choices[0]!;
    expect(choice.message.role).toBe('assistant');
    expect(choice.finish_reason).toBe('length');
    const content = choice.logprobs!.content!;
    expect(content).toHaveLength(4);
    expect(content.map((t) => t.token).join('')).toBe(choice.message.content);
    for (const token of content) {
      expect(token.top_logprobs).toHaveLength(2);
      expect(token.top_logprobs[0]!.logprob).toBeCloseTo(token.logprob, 4);
      expect(Buffer.from(token.bytes!).toString('utf8')).toBe(token.token);
    }
    expect(chat.usage!.completion_tokens).toBe(4);
  });

  it('streams chat: a role chunk, one chunk per token, usage last', async () => {
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Stream please' }],
      max_tokens: 5,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const tokenChunks = chunks.slice(1, -1);
    expect(tokenChunks).toHaveLength(5);
    expect(tokenChunks.every((c) => c.object === 'chat.completion.chunk' && c.choices.length === 1)).toBe(true);
    expect(tokenChunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage!.completion_tokens).toBe(5);
  });

  it('leaves the KV pool free', async () => {
    await expectKvFree(server.url);
  });
});
