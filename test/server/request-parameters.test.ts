import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../src/engine/errors.js';
import { resolveRequest } from '../../src/engine/params.js';
import { defaultMaxTokens, parameterRanges, type ParameterRange, type RangedParameter } from '../../src/engine/request-parameters.js';
import type { RunningServer } from '../../src/server/index.js';
import { validatorCompiler } from '../../src/server/http/validator.js';
import { ChatCompletionRequest } from '../../src/server/protocol/chat.js';
import { CompletionRequest } from '../../src/server/protocol/completions.js';
import { GenerateRequestBody } from '../../src/server/protocol/sglang.js';
import { json, startTestServer } from '../support/test-server.js';

/** Each ranged parameter's name in each request body (null where the API has none). */
const wireNames: Record<RangedParameter, { completions: string; chat: string; generate: string | null }> = {
  maxNewTokens: { completions: 'max_tokens', chat: 'max_completion_tokens', generate: 'max_new_tokens' },
  temperature: { completions: 'temperature', chat: 'temperature', generate: 'temperature' },
  topP: { completions: 'top_p', chat: 'top_p', generate: 'top_p' },
  topK: { completions: 'top_k', chat: 'top_k', generate: 'top_k' },
  minP: { completions: 'min_p', chat: 'min_p', generate: 'min_p' },
  frequencyPenalty: { completions: 'frequency_penalty', chat: 'frequency_penalty', generate: 'frequency_penalty' },
  presencePenalty: { completions: 'presence_penalty', chat: 'presence_penalty', generate: 'presence_penalty' },
  repetitionPenalty: { completions: 'repetition_penalty', chat: 'repetition_penalty', generate: 'repetition_penalty' },
  n: { completions: 'n', chat: 'n', generate: 'n' },
  logprobs: { completions: 'logprobs', chat: 'top_logprobs', generate: null },
  seed: { completions: 'seed', chat: 'seed', generate: 'seed' },
  minTokens: { completions: 'min_tokens', chat: 'min_tokens', generate: 'min_new_tokens' },
};

function schemaAccepts(schema: unknown, body: unknown): boolean {
  const validate = validatorCompiler({ schema, method: 'POST', url: '/', httpPart: 'body' } as never) as (v: unknown) => { error?: unknown };
  return !validate(body).error;
}

function engineAccepts(key: RangedParameter, value: number): boolean {
  try {
    resolveRequest({ promptTokenIds: [1], params: { [key]: value } }, 1000, 1e12);
    return true;
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidRequestError);
    expect((e as InvalidRequestError).param).toBe(parameterRanges[key].wire);
    return false;
  }
}

/** Values at each end of the range, and just outside it. */
function edges(range: ParameterRange): { inside: number[]; outside: number[] } {
  const step = range.integer ? 1 : 0.001;
  // The nearest representable value past x (1 is lost on numbers as large as 2^53).
  const past = (x: number, direction: 1 | -1) => x + direction * Math.max(step, Math.abs(x) * Number.EPSILON * 2);
  const inside = [range.exclusiveMin ? range.min + step : range.min];
  const outside = [range.exclusiveMin ? range.min : past(range.min, -1)];
  if (range.max !== Infinity) {
    inside.push(range.max);
    outside.push(past(range.max, 1));
  }
  return { inside, outside };
}

describe('request-parameter limits: the schemas and the engine read the same ones', () => {
  for (const key of Object.keys(parameterRanges) as RangedParameter[]) {
    it(`${key}: accepted and refused alike by every schema and the engine`, () => {
      const { inside, outside } = edges(parameterRanges[key]);
      const names = wireNames[key];
      const bodies = (value: number) => [
        [CompletionRequest, { prompt: 'x', [names.completions]: value }],
        [ChatCompletionRequest, { messages: [{ role: 'user', content: 'x' }], logprobs: true, [names.chat]: value }],
        ...(names.generate ? [[GenerateRequestBody, { text: 'x', sampling_params: { [names.generate]: value } }]] : []),
      ];
      for (const value of inside) {
        expect(engineAccepts(key, value), `engine, ${key} = ${value}`).toBe(true);
        for (const [schema, body] of bodies(value)) expect(schemaAccepts(schema, body), JSON.stringify(body)).toBe(true);
      }
      for (const value of outside) {
        expect(engineAccepts(key, value), `engine, ${key} = ${value}`).toBe(false);
        for (const [schema, body] of bodies(value)) expect(schemaAccepts(schema, body), JSON.stringify(body)).toBe(false);
      }
    });
  }

  it('top_logprobs_num of /generate has the logprobs range', () => {
    const { inside, outside } = edges(parameterRanges.logprobs);
    for (const v of inside) expect(schemaAccepts(GenerateRequestBody, { text: 'x', return_logprob: true, top_logprobs_num: v })).toBe(true);
    for (const v of outside) expect(schemaAccepts(GenerateRequestBody, { text: 'x', return_logprob: true, top_logprobs_num: v })).toBe(false);
  });
});

describe('request-parameter limits and defaults over HTTP', () => {
  const contextLength = 256;
  let server: RunningServer;
  const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: 'POST', body: JSON.stringify(body) });

  beforeAll(async () => {
    server = await startTestServer({ engine: { maxTotalTokens: contextLength } });
  });

  afterAll(async () => {
    await server?.shutdown(5000);
  });

  it('uses the context the server reports', async () => {
    expect((await json(fetch(`${server.url}/v1/models`))).data[0].max_model_len).toBe(contextLength);
  });

  it('a prompt plus max_tokens at the context passes; one more token is one 400 with one wording on every route', async () => {
    const prompt = Array.from({ length: 250 }, (_, i) => 10 + (i % 50));
    const room = contextLength - prompt.length;
    const atLimit = await json(post('/v1/completions', { prompt, max_tokens: room, temperature: 0, ignore_eos: true }));
    expect(atLimit.usage.completion_tokens).toBe(room);
    const generated = await json(post('/generate', { input_ids: prompt, sampling_params: { max_new_tokens: room, temperature: 0, ignore_eos: true } }));
    expect(generated.meta_info.completion_tokens).toBe(room);

    const completions = await post('/v1/completions', { prompt, max_tokens: room + 1 });
    const generate = await post('/generate', { input_ids: prompt, sampling_params: { max_new_tokens: room + 1 } });
    const errors = [await json(completions), await json(generate)];
    expect([completions.status, generate.status]).toEqual([400, 400]);
    expect(errors.map((e) => e.error.param)).toEqual(['prompt', 'input_ids']);
    expect(errors.map((e) => e.error.code)).toEqual(['context_length_exceeded', 'context_length_exceeded']);
    expect(errors[0].error.message).toBe(errors[1].error.message);
    expect(errors[0].error.message).toContain(`maximum context length is ${contextLength} tokens`);
    expect(errors[0].error.message).toContain(`you requested ${contextLength + 1} tokens (${prompt.length} in the messages, ${room + 1} in the completion)`);
  });

  it('top log-probs: the limit passes, one more is a 400 from both APIs', async () => {
    const max = parameterRanges.logprobs.max;
    const ok = await json(post('/v1/completions', { prompt: 'x', max_tokens: 1, logprobs: max }));
    expect(Object.keys(ok.choices[0].logprobs.top_logprobs[0]).length).toBeGreaterThan(1);
    const okGenerate = await json(post('/generate', { text: 'x', return_logprob: true, top_logprobs_num: max, sampling_params: { max_new_tokens: 1 } }));
    expect(okGenerate.meta_info.output_top_logprobs[0]).toHaveLength(max);
    const over = await post('/v1/completions', { prompt: 'x', max_tokens: 1, logprobs: max + 1 });
    const overGenerate = await post('/generate', { text: 'x', return_logprob: true, top_logprobs_num: max + 1 });
    expect([over.status, overGenerate.status]).toEqual([400, 400]);
    expect((await json(over)).error.param).toBe('logprobs');
    expect((await json(overGenerate)).error.param).toBe('top_logprobs_num');
  });

  it('applies the default max_tokens of each API', async () => {
    const completions = await json(post('/v1/completions', { prompt: 'Default length', temperature: 0, ignore_eos: true }));
    expect(completions.usage.completion_tokens).toBe(defaultMaxTokens.completions);
    const generate = await json(post('/generate', { text: 'Default length', sampling_params: { temperature: 0, ignore_eos: true } }));
    expect(generate.meta_info.completion_tokens).toBe(defaultMaxTokens.generate);
    const chat = await json(post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Default length' }], temperature: 0, ignore_eos: true }));
    expect(chat.usage.completion_tokens).toBe(defaultMaxTokens.chat(contextLength, chat.usage.prompt_tokens));
  });
});
