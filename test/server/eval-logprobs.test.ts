import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { json, startTestServer } from '../support/test-server.js';

// Issue 18 items 19 and 20: prompt log-probs as evaluation harnesses ask for them (lm-eval's
// loglikelihood requests: completions, echo, logprobs 1, max_tokens 0 or 1; vLLM's
// prompt_logprobs; SGLang's return_logprob with logprob_start_len), and the extra sampling
// fields: each works or is refused by name.

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.shutdown(5000);
});

const post = (path: string, body: unknown, url = server.url) => fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify(body) });
const context = [128000, 791, 6864, 315, 9822, 374];
const continuation = [12366, 13];
const prompt = [...context, ...continuation];

describe('item 19: lm-eval loglikelihood requests', () => {
  it('echo + logprobs 1 + max_tokens 1: the prompt tokens come first with their log-probs, the first null', async () => {
    const response = await json(post('/v1/completions', { prompt, max_tokens: 1, echo: true, logprobs: 1, temperature: 0 }));
    const choice = response.choices[0];
    const lp = choice.logprobs;
    expect(lp.tokens.length).toBe(prompt.length + 1);
    expect(lp.token_logprobs[0]).toBeNull();
    expect(lp.top_logprobs[0]).toBeNull();
    for (let i = 1; i < lp.token_logprobs.length; i++) {
      expect(lp.token_logprobs[i]).toBeLessThanOrEqual(0);
      expect(Object.keys(lp.top_logprobs[i]).length).toBeGreaterThanOrEqual(1);
    }
    // lm-eval sums token_logprobs[ctxlen:-1] and checks each is the top choice (is_greedy).
    const continuationLogprob = lp.token_logprobs.slice(context.length, -1).reduce((a: number, b: number) => a + b, 0);
    expect(Number.isFinite(continuationLogprob)).toBe(true);
    expect(lp.text_offset.length).toBe(lp.tokens.length);
    for (let i = 1; i < lp.text_offset.length; i++) expect(lp.text_offset[i]).toBeGreaterThanOrEqual(lp.text_offset[i - 1]);
    expect(choice.text.startsWith(lp.tokens.slice(0, prompt.length).join(''))).toBe(true);

    // The log-prob of a prompt token equals the one the sampler gives the same token in the same place.
    const generated = await json(post('/generate', { input_ids: prompt, sampling_params: { max_new_tokens: 1, temperature: 0 }, return_logprob: true }));
    const sampledToken = generated.output_ids[0];
    const sampledLogprob = generated.meta_info.output_token_logprobs[0][0];
    expect(lp.token_logprobs.at(-1)).toBeCloseTo(sampledLogprob, 5);
    const again = await json(post('/v1/completions', { prompt: [...prompt, sampledToken], max_tokens: 0, echo: true, logprobs: 1 }));
    const reread = again.choices[0].logprobs;
    expect(reread.tokens.length).toBe(prompt.length + 1);
    expect(again.choices[0].finish_reason).toBe('length');
    expect(reread.tokens.at(-1)).toBe(lp.tokens.at(-1));
    expect(reread.token_logprobs.at(-1)).toBeCloseTo(sampledLogprob, 4);
    expect(reread.token_logprobs.slice(0, -1)).toEqual(lp.token_logprobs.slice(0, -1));
    // Same prompt again: now from a warm prefix cache, the same numbers.
    const warm = await json(post('/v1/completions', { prompt: [...prompt, sampledToken], max_tokens: 0, echo: true, logprobs: 1 }));
    expect(warm.choices[0].logprobs.token_logprobs).toEqual(reread.token_logprobs);
  });

  it("vLLM's prompt_logprobs and SGLang's input_token_logprobs agree with the echoed listing", async () => {
    const echoed = (await json(post('/v1/completions', { prompt, max_tokens: 0, echo: true, logprobs: 2 }))).choices[0].logprobs;
    const vllm = (await json(post('/v1/completions', { prompt, max_tokens: 1, prompt_logprobs: 2 }))).choices[0];
    expect(vllm.prompt_logprobs.length).toBe(prompt.length);
    expect(vllm.prompt_logprobs[0]).toBeNull();
    for (let i = 1; i < prompt.length; i++) {
      const entry = vllm.prompt_logprobs[i][String(prompt[i])];
      expect(entry.logprob).toBeCloseTo(echoed.token_logprobs[i], 5);
      expect(entry.rank).toBeGreaterThanOrEqual(1);
    }
    const sglang = await json(post('/generate', { input_ids: prompt, sampling_params: { max_new_tokens: 1 }, return_logprob: true, logprob_start_len: 2, top_logprobs_num: 1 }));
    const input = sglang.meta_info.input_token_logprobs;
    expect(input.length).toBe(prompt.length - 2);
    input.forEach(([logprob, id]: [number, number], i: number) => {
      expect(id).toBe(prompt[i + 2]);
      expect(logprob).toBeCloseTo(echoed.token_logprobs[i + 2], 5);
    });
    expect(sglang.meta_info.input_top_logprobs[0].length).toBe(1);
  });

  it('a backend that cannot compute prompt log-probs refuses them by name', async () => {
    const instant = await startTestServer({ instant: true });
    try {
      const response = await post('/v1/completions', { prompt, max_tokens: 1, echo: true, logprobs: 1 }, instant.url);
      expect(response.status).toBe(400);
      const body = await json(response);
      expect(body.error.param).toBe('prompt_logprobs');
      expect(body.error.message).toMatch(/instant backend/);
    } finally {
      await instant.shutdown(2000);
    }
  });
});

describe('item 19 on the cpu backend: lm-eval requests through HTTP', () => {
  let cpu: RunningServer;
  beforeAll(async () => {
    cpu = await startTestServer({ backend: { kind: 'flags', flags: { backend: 'cpu', threads: 2 } } });
  });
  afterAll(async () => {
    await cpu?.shutdown(5000);
  });

  it('loglikelihood (several prompts, max_tokens 0 or 1, echo, logprobs 1) gives the reference backend\'s numbers', async () => {
    const other = [128000, 791, 3938, 315, 279, 1917, 374, 6437, 13];
    for (const max_tokens of [0, 1]) {
      const body = { prompt: [prompt, other], max_tokens, echo: true, logprobs: 1, temperature: 0, seed: 1234 };
      const got = await json(post('/v1/completions', body, cpu.url));
      const want = await json(post('/v1/completions', body));
      expect(got.choices).toHaveLength(2);
      for (const [i, ids] of [prompt, other].entries()) {
        const a = got.choices[i].logprobs;
        const b = want.choices[i].logprobs;
        expect(a.tokens.length).toBe(ids.length + max_tokens);
        expect(a.tokens).toEqual(b.tokens);
        expect(a.token_logprobs[0]).toBeNull();
        for (let t = 1; t < a.token_logprobs.length; t++) {
          expect(Math.abs(a.token_logprobs[t] - b.token_logprobs[t])).toBeLessThan(1e-3);
          // lm-eval's is_greedy: the token is its position's top choice.
          expect(Object.keys(a.top_logprobs[t])).toEqual(Object.keys(b.top_logprobs[t]));
        }
        expect(a.text_offset).toEqual(b.text_offset);
        expect(got.choices[i].text).toBe(want.choices[i].text);
      }
    }
  });

  it("vLLM's prompt_logprobs and SGLang's input_token_logprobs on cpu agree with the reference", async () => {
    const vllmBody = { prompt, max_tokens: 1, prompt_logprobs: 2, temperature: 0 };
    const got = (await json(post('/v1/completions', vllmBody, cpu.url))).choices[0].prompt_logprobs;
    const want = (await json(post('/v1/completions', vllmBody))).choices[0].prompt_logprobs;
    expect(got[0]).toBeNull();
    for (let i = 1; i < prompt.length; i++) {
      expect(Object.keys(got[i])).toEqual(Object.keys(want[i]));
      for (const id of Object.keys(want[i])) {
        expect(got[i][id].rank).toBe(want[i][id].rank);
        expect(Math.abs(got[i][id].logprob - want[i][id].logprob)).toBeLessThan(1e-3);
      }
    }
    const sglangBody = { input_ids: prompt, sampling_params: { max_new_tokens: 1, temperature: 0 }, return_logprob: true, logprob_start_len: 3, top_logprobs_num: 1 };
    const a = (await json(post('/generate', sglangBody, cpu.url))).meta_info.input_token_logprobs;
    const b = (await json(post('/generate', sglangBody))).meta_info.input_token_logprobs;
    expect(a.length).toBe(prompt.length - 3);
    a.forEach(([logprob, id]: [number, number], i: number) => {
      expect(id).toBe(b[i][1]);
      expect(Math.abs(logprob - b[i][0])).toBeLessThan(1e-3);
    });
  });
});

describe('item 20: extra sampling fields work or are refused by name', () => {
  it('include_stop_str_in_output (vLLM) and no_stop_trim (SGLang) keep the stop string', async () => {
    const base = { prompt: 'The story begins', max_tokens: 24, temperature: 0, ignore_eos: true };
    const text: string = (await json(post('/v1/completions', base))).choices[0].text;
    const stop = text.slice(6, 9);
    expect(stop.length).toBe(3);
    const cut = (await json(post('/v1/completions', { ...base, stop: [stop] }))).choices[0];
    const kept = (await json(post('/v1/completions', { ...base, stop: [stop], include_stop_str_in_output: true }))).choices[0];
    expect(cut.finish_reason).toBe('stop');
    expect(kept.text).toBe(cut.text + stop);
    const sglang = await json(post('/generate', { text: 'The story begins', sampling_params: { max_new_tokens: 24, temperature: 0, ignore_eos: true, stop: [stop], no_stop_trim: true } }));
    expect(sglang.text.endsWith(stop)).toBe(true);
  });

  it('refuses, naming the field, what it does not implement', async () => {
    const cases: [string, object, string][] = [
      ['/v1/completions', { prompt: 'x', use_beam_search: true }, 'use_beam_search'],
      ['/v1/completions', { prompt: 'x', lora_request: { lora_name: 'a' } }, 'lora_request'],
      ['/v1/completions', { prompt: 'x', best_of: 3, stream: true }, 'best_of'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], modalities: ['text', 'audio'] }, 'modalities'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], audio: { voice: 'alloy' } }, 'audio'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], prompt_logprobs: 1 }, 'prompt_logprobs'],
      ['/generate', { text: 'x', lora_path: 'adapter' }, 'lora_path'],
      ['/generate', { text: 'x', image_data: 'data:image/png;base64,AAAA' }, 'image_data'],
      ['/generate', { text: 'x', return_hidden_states: true }, 'return_hidden_states'],
    ];
    for (const [path, body, param] of cases) {
      const response = await post(path, body);
      const error = (await json(response)).error;
      expect({ path, param, status: response.status, named: error?.param }).toEqual({ path, param, status: 400, named: param });
    }
  });
});
