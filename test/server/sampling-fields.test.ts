import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { json, startTestServer } from '../support/test-server.js';

// Issue 18 item 20: logit_bias, min_tokens (vLLM) / min_new_tokens (SGLang) change the output as
// the peers specify, through HTTP, on the ref backend and the tiny preset (EOS ids 128001,
// 128008, 128009; vocabulary 128256).

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.shutdown(5000);
});

const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: 'POST', body: JSON.stringify(body) });
const eos = 128009;

async function generate(samplingParams: object, extra: object = {}): Promise<any> {
  const response = await post('/generate', { text: 'The story begins', sampling_params: samplingParams, ...extra });
  expect(response.status).toBe(200);
  return response.json();
}

describe('logit_bias', () => {
  it('+100 on one token forces it at temperature 1, on /generate, /v1/completions and /v1/chat/completions; its log-prob is after the bias (~0)', async () => {
    const out = await generate({ max_new_tokens: 6, temperature: 1, ignore_eos: true, logit_bias: { '500': 100 } }, { return_logprob: true });
    expect(out.output_ids).toEqual([500, 500, 500, 500, 500, 500]);
    for (const [logprob] of out.meta_info.output_token_logprobs) expect(logprob).toBeGreaterThan(-1e-3);
    const completion = await json(post('/v1/completions', { prompt: 'The story begins', max_tokens: 6, temperature: 1, ignore_eos: true, logit_bias: { '500': 100 } }));
    expect(completion.choices[0].text).toBe(out.text);
    const chat = await json(
      post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 6, temperature: 1, ignore_eos: true, logit_bias: { '500': 100 } }),
    );
    expect(chat.choices[0].message.content).toBe(out.text);
  });

  it('-100 on the greedy choice makes greedy decoding pick another token', async () => {
    const plain = await generate({ max_new_tokens: 1, temperature: 0, ignore_eos: true });
    const first = plain.output_ids[0];
    const biased = await generate({ max_new_tokens: 1, temperature: 0, ignore_eos: true, logit_bias: { [String(first)]: -100 } });
    expect(biased.output_ids[0]).not.toBe(first);
  });

  it('a bias that is not a token id, outside [-100, 100] or on an id past the vocabulary is refused naming logit_bias', async () => {
    for (const logit_bias of [{ abc: 1 }, { '5': 101 }, { '128256': 1 }, { '-3': 1 }]) {
      const response = await post('/v1/completions', { prompt: 'x', logit_bias });
      expect(response.status, JSON.stringify(logit_bias)).toBe(400);
      expect((await json(response)).error.param).toBe('logit_bias');
    }
  });
});

describe('min_tokens / min_new_tokens', () => {
  it('EOS cannot end the output before min_tokens tokens; it ends it right after', async () => {
    const likesEos = { max_new_tokens: 20, temperature: 0, logit_bias: { [String(eos)]: 100 } };
    const early = await generate(likesEos);
    expect(early.output_ids).toEqual([eos]);
    expect(early.meta_info.finish_reason).toEqual({ type: 'stop', matched: eos });
    const held = await generate({ ...likesEos, min_new_tokens: 5 });
    expect(held.output_ids.length).toBe(6);
    expect(held.output_ids.slice(0, 5).some((id: number) => [128001, 128008, 128009].includes(id))).toBe(false);
    expect(held.output_ids[5]).toBe(eos);
    const completion = await json(post('/v1/completions', { prompt: 'The story begins', max_tokens: 20, temperature: 0, logit_bias: { [String(eos)]: 100 }, min_tokens: 5 }));
    expect(completion.choices[0].finish_reason).toBe('stop');
    expect(completion.usage.completion_tokens).toBe(6);
    expect(completion.choices[0].text).toBe(held.text);
  });

  it('stop_token_ids are held back the same way (with ignore_eos, EOS is not)', async () => {
    const out = await generate({ max_new_tokens: 20, temperature: 0.7, ignore_eos: true, stop_token_ids: [700], logit_bias: { '700': 100 }, min_new_tokens: 3 });
    expect(out.output_ids.length).toBe(4);
    expect(out.output_ids.slice(0, 3)).not.toContain(700);
    expect(out.output_ids[3]).toBe(700);
    expect(out.meta_info.finish_reason).toEqual({ type: 'stop', matched: 700 });
    const eosAllowed = await generate({ max_new_tokens: 20, temperature: 0, ignore_eos: true, logit_bias: { [String(eos)]: 100 }, min_new_tokens: 3 });
    expect(eosAllowed.output_ids.slice(0, 3)).toEqual([eos, eos, eos]);
  });

  it('stop strings do not end the output before min_tokens (vLLM)', async () => {
    const base = { prompt: 'The story begins', max_tokens: 12, temperature: 0, ignore_eos: true };
    const text: string = (await json(post('/v1/completions', base))).choices[0].text;
    const stop = text.slice(0, 2);
    const cut = (await json(post('/v1/completions', { ...base, stop: [stop] }))).choices[0];
    expect(cut).toMatchObject({ text: '', finish_reason: 'stop' });
    const held = (await json(post('/v1/completions', { ...base, stop: [stop], min_tokens: 8 }))).choices[0];
    expect(held.text.startsWith(stop)).toBe(true);
  });

  it('min_tokens above max_tokens is refused naming min_tokens', async () => {
    const response = await post('/v1/completions', { prompt: 'x', max_tokens: 3, min_tokens: 4 });
    expect(response.status).toBe(400);
    expect((await json(response)).error.param).toBe('min_tokens');
  });
});

describe('best_of above n (vLLM v0, OpenAI completions)', () => {
  const base = { prompt: 'The story begins', max_tokens: 8, temperature: 1.2, seed: 7, ignore_eos: true };
  const cumulative = (choice: any): number => choice.logprobs.token_logprobs.reduce((a: number, b: number) => a + b, 0);

  it('returns the n of best_of samples with the highest cumulative log-prob, best first; usage counts every generated token', async () => {
    // Sample i of a seeded request draws from seed + i, so n = 4 shows the four samples best_of = 4 ranks.
    const all = await json(post('/v1/completions', { ...base, n: 4, logprobs: 0 }));
    const ranked = [...all.choices].sort((a, b) => cumulative(b) - cumulative(a) || a.index - b.index);
    expect(new Set(all.choices.map((c: any) => c.text)).size).toBeGreaterThan(1);
    const best = await json(post('/v1/completions', { ...base, n: 2, best_of: 4, logprobs: 0 }));
    expect(best.choices.map((c: any) => c.index)).toEqual([0, 1]);
    expect(best.choices.map((c: any) => c.text)).toEqual([ranked[0].text, ranked[1].text]);
    expect(cumulative(best.choices[0])).toBeCloseTo(cumulative(ranked[0]), 5);
    expect(best.usage.completion_tokens).toBe(all.usage.completion_tokens);
    const one = await json(post('/v1/completions', { ...base, best_of: 4 }));
    expect(one.choices).toHaveLength(1);
    expect(one.choices[0].text).toBe(ranked[0].text);
    expect(one.choices[0].logprobs).toBeNull();
    const chat = await json(post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 6, temperature: 1.2, seed: 3, ignore_eos: true, best_of: 3 }));
    expect(chat.choices).toHaveLength(1);
    expect(chat.usage.completion_tokens).toBe(18);
  });

  it('best_of below n, and streaming with best_of above n, are refused naming best_of', async () => {
    for (const body of [{ ...base, n: 3, best_of: 2 }, { ...base, best_of: 2, stream: true }]) {
      const response = await post('/v1/completions', body);
      expect(response.status).toBe(400);
      expect((await json(response)).error.param).toBe('best_of');
    }
  });
});
