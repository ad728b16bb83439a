import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/index.js';
import { json, startTestServer } from '../support/test-server.js';

let server: RunningServer;

beforeAll(async () => {
  server = await startTestServer();
});

afterAll(async () => {
  await server?.shutdown(5000);
});

async function post(path: string, body: unknown): Promise<{ status: number; json: any }> {
  const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, json: await json(response) };
}

const chat = (extra: object) => ['/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, ...extra }] as const;
const completion = (extra: object) => ['/v1/completions', { prompt: 'hi', max_tokens: 4, ...extra }] as const;
const generate = (sp: object) => ['/generate', { text: 'hi', sampling_params: { max_new_tokens: 4, ...sp } }] as const;

describe('structured-output fields the server does not implement: 400 naming the field', () => {
  const cases: [string, readonly [string, object], string][] = [
    ['response_format of an unknown type', chat({ response_format: { type: 'structural_tag' } }), 'response_format'],
    ['response_format json_schema without its object', completion({ response_format: { type: 'json_schema' } }), 'response_format.json_schema'],
    ['guided_whitespace_pattern', chat({ guided_json: { type: 'object' }, guided_whitespace_pattern: '[ ]?' }), 'guided_whitespace_pattern'],
    ['guided_decoding_backend other than xgrammar', completion({ guided_regex: 'a+', guided_decoding_backend: 'outlines' }), 'guided_decoding_backend'],
    ['structured_outputs.structural_tag', chat({ structured_outputs: { structural_tag: '{}' } }), 'structured_outputs.structural_tag'],
    ['structured_outputs.whitespace_pattern', completion({ structured_outputs: { regex: 'a', whitespace_pattern: ' ' } }), 'structured_outputs.whitespace_pattern'],
    ['SGLang structural_tag', generate({ structural_tag: '{}' }), 'sampling_params.structural_tag'],
    ['two constraints at once', chat({ guided_regex: 'a+', response_format: { type: 'json_object' } }), 'guided_regex'],
    ['two SGLang constraints at once', generate({ regex: 'a+', ebnf: 'root ::= "a"' }), 'sampling_params.ebnf'],
    ['guided_json that is not JSON', completion({ guided_json: '{"type": ' }), 'guided_json'],
    ['SGLang json_schema that is not JSON', generate({ json_schema: 'nope' }), 'sampling_params.json_schema'],
    ['a JSON schema that is a list', chat({ guided_json: [1, 2] }), 'guided_json'],
    ['functions (deprecated)', chat({ functions: [{ name: 'f', parameters: {} }] }), 'functions'],
    ['function_call (deprecated)', chat({ function_call: 'auto' }), 'function_call'],
    ['tool_choice without tools', chat({ tool_choice: 'auto' }), 'tool_choice'],
    ['tool_choice "none" without tools', chat({ tool_choice: 'none' }), 'tool_choice'],
    ['parallel_tool_calls without tools', chat({ parallel_tool_calls: false }), 'parallel_tool_calls'],
  ];
  for (const [what, [path, body], param] of cases) {
    it(what, async () => {
      const { status, json } = await post(path, body);
      expect(status, JSON.stringify(json)).toBe(400);
      expect(json.error.param).toBe(param);
      expect(json.error.message).toContain(param.split('.').at(-1)!);
    });
  }

  it('response_format "text" is the default and is accepted', async () => {
    const { status } = await post(...chat({ response_format: { type: 'text' } }));
    expect(status).toBe(200);
  });
});

describe('constraint fields are never silently ignored', () => {
  const cases: [readonly [string, object], string][] = [
    [chat({ response_format: { type: 'json_object' } }), 'response_format'],
    [completion({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } } }), 'response_format.json_schema.schema'],
    [chat({ guided_json: { type: 'object' } }), 'guided_json'],
    [completion({ guided_regex: '[0-9]+' }), 'guided_regex'],
    [completion({ guided_choice: ['yes', 'no'] }), 'guided_choice'],
    [chat({ guided_grammar: 'root ::= "a"' }), 'guided_grammar'],
    [completion({ structured_outputs: { json: { type: 'object' } } }), 'structured_outputs.json'],
    [generate({ regex: '[0-9]+' }), 'sampling_params.regex'],
    [generate({ json_schema: '{"type": "object"}' }), 'sampling_params.json_schema'],
    [generate({ ebnf: 'root ::= "a"' }), 'sampling_params.ebnf'],
    [chat({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] }), 'tools'],
  ];
  for (const [[path, body], param] of cases) {
    it(`${param} on ${path}: honoured or refused`, async () => {
      const { status, json } = await post(path, body);
      expect(status, JSON.stringify(json)).toBe(400);
      expect(json.error.param).toBe(param);
    });
  }
});
