import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tokenizer } from '../../src/model/tokenizer.js';
import type { RunningServer } from '../../src/server/index.js';
import { scanToolCalls } from '../../src/server/tool-calls/tool-call-parser.js';
import { ToolCallStream } from '../../src/server/tool-calls/tool-call-stream.js';
import { templateMessages } from '../../src/server/tool-calls/tool-prompt.js';
import { readEvents, startTestServer } from '../support/test-server.js';

const tools: OpenAI.ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'] },
    },
  },
  {
    type: 'function',
    function: {
      name: 'add',
      parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 120 }, b: { type: 'integer', minimum: -5, maximum: 5 } }, required: ['a', 'b'] },
    },
  },
];
const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
const ajv = new Ajv({ strict: false });

function expectValidCalls(calls: OpenAI.ChatCompletionMessageToolCall[] | undefined, only?: string): void {
  expect(calls && calls.length).toBeGreaterThan(0);
  for (const call of calls!) {
    expect(call.type).toBe('function');
    expect(call.id).toMatch(/^call_[0-9a-f]{24}$/);
    if (call.type !== 'function') continue;
    const tool = tools.find((t) => t.type === 'function' && t.function.name === call.function.name);
    expect(tool, call.function.name).toBeDefined();
    if (only) expect(call.function.name).toBe(only);
    const validate = ajv.compile(tool!.type === 'function' ? tool!.function.parameters! : {});
    expect(validate(JSON.parse(call.function.arguments)), call.function.arguments).toBe(true);
  }
}

/** Tool calls without their ids (each response makes its own). */
const withoutIds = (calls: OpenAI.ChatCompletionMessageToolCall[] | undefined) => calls?.map(({ id: _, ...rest }) => rest);

describe('tool calling through the official openai client', () => {
  let server: RunningServer;
  let client: OpenAI;
  beforeAll(async () => {
    server = await startTestServer();
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.shutdown(5000);
  });

  const choices: [string, OpenAI.ChatCompletionToolChoiceOption, boolean | undefined, number, string | undefined][] = [
    ['required, one call, greedy', 'required', false, 0, undefined],
    ['a named function, sampled', { type: 'function', function: { name: 'add' } }, undefined, 1, 'add'],
    ['required, parallel calls allowed, sampled', 'required', true, 0.9, undefined],
  ];
  for (const [what, toolChoice, parallel, temperature, only] of choices) {
    it(`${what}: streamed and not give the same valid tool_calls and finish_reason tool_calls`, async () => {
      const request = { model: 'tiny', messages, tools, tool_choice: toolChoice, max_tokens: 120, temperature, seed: 7, ...(parallel === undefined ? {} : { parallel_tool_calls: parallel }) };
      const whole = await client.chat.completions.create(request);
      const choice = whole.choices[0]!;
      expect(choice.finish_reason).toBe('tool_calls');
      expect(choice.message.content).toBeNull();
      expectValidCalls(choice.message.tool_calls, only);
      if (parallel === false) expect(choice.message.tool_calls).toHaveLength(1);

      const stream = client.chat.completions.stream(request);
      const streamed = await stream.finalChatCompletion();
      expect(streamed.choices[0]!.finish_reason).toBe('tool_calls');
      expect(withoutIds(streamed.choices[0]!.message.tool_calls)).toEqual(withoutIds(choice.message.tool_calls));
      expectValidCalls(streamed.choices[0]!.message.tool_calls, only);
    });
  }

  it('streams each call as OpenAI does: id, type and name first, then argument fragments by index', async () => {
    const response = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages, tools, tool_choice: 'required', max_tokens: 120, temperature: 0, stream: true }),
    });
    const events = (await readEvents(response)).filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
    const pieces = events.flatMap((e) => e.choices[0]?.delta.tool_calls ?? []);
    expect(events[0].choices[0].delta).toEqual({ role: 'assistant', content: null });
    expect(pieces[0]).toMatchObject({ index: 0, type: 'function', function: { name: expect.any(String) } });
    expect(pieces[0].id).toMatch(/^call_/);
    for (const piece of pieces.slice(1)) {
      if (piece.id !== undefined) expect(piece.index).toBeGreaterThan(0);
      else expect(Object.keys(piece.function)).toEqual(['arguments']);
    }
    expect(events.filter((e) => e.choices[0]?.delta.content).length).toBe(0);
    expect(events.at(-1).choices[0].finish_reason).toBe('tool_calls');
  });

  it('tool_choice auto and none leave plain text as content', async () => {
    for (const toolChoice of ['auto', 'none'] as const) {
      const whole = await client.chat.completions.create({ model: 'tiny', messages, tools, tool_choice: toolChoice, max_tokens: 6, temperature: 0 });
      const choice = whole.choices[0]!;
      expect(choice.finish_reason).toBe('length');
      expect(typeof choice.message.content).toBe('string');
      expect(choice.message.tool_calls).toBeUndefined();
    }
  });

  it('takes assistant tool_calls and tool results in the history', async () => {
    const history: OpenAI.ChatCompletionMessageParam[] = [
      ...messages,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '21 degrees' },
    ];
    const followUp = await client.chat.completions.create({ model: 'tiny', messages: history, tools, max_tokens: 4, temperature: 0 });
    const first = await client.chat.completions.create({ model: 'tiny', messages, tools, max_tokens: 4, temperature: 0 });
    expect(followUp.usage!.prompt_tokens).toBeGreaterThan(first.usage!.prompt_tokens + 20);
  });
});

describe('the Llama 3.1 tool format in the prompt', () => {
  const tokenizer = Tokenizer.llama3();
  const openAiTools = tools.map((t) => t as never);

  it('puts the function definitions in the first user message, earlier calls as JSON and results as ipython messages', () => {
    const { messages: rendered, extra } = templateMessages(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius"}' } }] },
        { role: 'tool', content: '21 degrees', tool_call_id: 'call_1' },
      ],
      openAiTools,
      tokenizer.templateRendersTools,
    );
    const text = tokenizer.applyChatTemplate(rendered, true, extra);
    expect(tokenizer.templateRendersTools).toBe(false);
    expect(text).toContain('<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>');
    expect(text).toMatch(/<\|start_header_id\|>user<\|end_header_id\|>\n\nGiven the following functions[\s\S]*"name": "get_weather"[\s\S]*"name": "add"[\s\S]*\n\nWeather in Paris\?<\|eot_id\|>/);
    expect(text).toContain('<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": {"city":"Paris","unit":"celsius"}}<|eot_id|>');
    expect(text).toContain('<|start_header_id|>ipython<|end_header_id|>\n\n21 degrees<|eot_id|>');
  });

  it('hands tools and parsed call arguments to a template that renders tools itself', () => {
    const { messages: rendered, extra } = templateMessages(
      [{ role: 'assistant', content: '', tool_calls: [{ id: 'c', type: 'function', function: { name: 'add', arguments: '{"a": 1, "b": 2}' } }] }],
      openAiTools,
      true,
    );
    expect(extra.tools).toBe(openAiTools);
    expect(rendered[0]!.tool_calls![0]!.function.arguments).toEqual({ a: 1, b: 2 });
  });
});

describe('reading tool calls out of streamed text', () => {
  const text = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Pa\\"ris", "n": [1, {"x": 2}]}}; {"name":"add","arguments":{"a":12}}';

  it('finds every call and its arguments in the whole text', () => {
    expect(scanToolCalls(text)).toEqual({
      kind: 'calls',
      calls: [
        { name: 'get_weather', arguments: '{"city": "Pa\\"ris", "n": [1, {"x": 2}]}', complete: true },
        { name: 'add', arguments: '{"a":12}', complete: true },
      ],
    });
    expect(scanToolCalls('The weather is fine.').kind).toBe('text');
    expect(scanToolCalls(' {"na').kind).toBe('open');
    expect(scanToolCalls('{"other": 1}').kind).toBe('text');
  });

  for (const size of [1, 2, 5, 13]) {
    it(`pieces of ${size} characters add up to the same calls, names sent once`, () => {
      const stream = new ToolCallStream(() => 'id');
      const calls: { name: string; arguments: string }[] = [];
      for (let i = 0; i < text.length; i += size) {
        const piece = stream.push(text.slice(i, i + size), i + size >= text.length);
        expect(piece.content).toBe('');
        for (const d of piece.toolCalls) {
          if (d.id !== undefined) calls[d.index] = { name: d.function.name!, arguments: '' };
          calls[d.index]!.arguments += d.function.arguments;
        }
      }
      expect(stream.calledTools).toBe(true);
      expect(calls).toEqual(scanToolCalls(text).calls.map(({ name, arguments: args }) => ({ name, arguments: args })));
    });
  }

  it('text that turns out not to be a call is sent as content, held back only while it could be one', () => {
    const stream = new ToolCallStream(() => 'id');
    expect(stream.push('{"na', false).content).toBe('');
    expect(stream.push('p": 1}', false).content).toBe('{"nap": 1}');
    expect(stream.push(' more', true).content).toBe(' more');
    expect(stream.calledTools).toBe(false);
    const short = new ToolCallStream(() => 'id');
    expect(short.push('{', true).content).toBe('{');
  });
});
