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
const tool = (name: string) => ({ type: 'function', function: { name, parameters: { type: 'object', properties: { x: { type: 'boolean' } }, required: ['x'] } } });
const generate = (sp: object) => ['/generate', { text: 'hi', sampling_params: { max_new_tokens: 4, ...sp } }] as const;

describe('structured-output fields the server does not implement: 400 naming the field', () => {
  const cases: [string, readonly [string, object], string][] = [
    ['response_format of an unknown type', chat({ response_format: { type: 'grammar' } }), 'response_format'],
    ['response_format structural_tag with neither format nor structures', chat({ response_format: { type: 'structural_tag' } }), 'response_format'],
    ['response_format json_schema without its object', completion({ response_format: { type: 'json_schema' } }), 'response_format.json_schema'],
    ['guided_whitespace_pattern', chat({ guided_json: { type: 'object' }, guided_whitespace_pattern: '[ ]?' }), 'guided_whitespace_pattern'],
    ['guided_decoding_backend other than xgrammar', completion({ guided_regex: 'a+', guided_decoding_backend: 'outlines' }), 'guided_decoding_backend'],
    ['structured_outputs.structural_tag that is empty', chat({ structured_outputs: { structural_tag: '{}' } }), 'structured_outputs.structural_tag'],
    ['structured_outputs.whitespace_pattern', completion({ structured_outputs: { regex: 'a', whitespace_pattern: ' ' } }), 'structured_outputs.whitespace_pattern'],
    ['SGLang structural_tag that is empty', generate({ structural_tag: '{}' }), 'sampling_params.structural_tag'],
    ['SGLang structural_tag that is not JSON', generate({ structural_tag: '{"structures": ' }), 'sampling_params.structural_tag'],
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
    ['tool_choice naming a function that is not a tool', chat({ tools: [tool('f')], tool_choice: { type: 'function', function: { name: 'g' } } }), 'tool_choice'],
    ['two tools of one name', chat({ tools: [tool('f'), tool('f')] }), 'tools[1].function.name'],
    ['tool_choice required with a response_format', chat({ tools: [tool('f')], tool_choice: 'required', response_format: { type: 'json_object' } }), 'response_format'],
    ['a tool whose parameters do not compile', chat({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'nope' } } }], tool_choice: 'required' }), 'tools'],
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

describe('constraint fields are honoured on every surface', () => {
  const jsonSchema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] };
  const isOkObject = (text: string) => typeof JSON.parse(text).ok === 'boolean';
  const okTag = { type: 'tag', begin: '<r>', content: { type: 'json_schema', json_schema: jsonSchema }, end: '</r>' };
  const isOkTag = (text: string) => text.startsWith('<r>') && text.endsWith('</r>') && isOkObject(text.slice(3, -4));
  const cases: [string, readonly [string, object], (text: string) => boolean][] = [
    ['chat response_format json_object', chat({ response_format: { type: 'json_object' }, max_tokens: 3 }), (t) => t.startsWith('{')],
    ['completions response_format json_schema', completion({ max_tokens: 20, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: jsonSchema } } }), isOkObject],
    ['chat guided_json', chat({ max_tokens: 20, guided_json: jsonSchema }), isOkObject],
    ['completions guided_json as text', completion({ max_tokens: 20, guided_json: JSON.stringify(jsonSchema) }), isOkObject],
    ['completions guided_regex', completion({ max_tokens: 20, guided_regex: '[0-9]{2,3}-[ab]{3}' }), (t) => /^[0-9]{2,3}-[ab]{3}$/.test(t)],
    ['completions guided_choice', completion({ max_tokens: 20, guided_choice: ['yes', 'no', 'perhaps not'] }), (t) => ['yes', 'no', 'perhaps not'].includes(t)],
    ['chat guided_grammar', chat({ max_tokens: 20, guided_grammar: 'root ::= "<" [xyz] [xyz]? ">"' }), (t) => /^<[xyz]{1,2}>$/.test(t)],
    ['completions structured_outputs.regex', completion({ max_tokens: 20, structured_outputs: { regex: '(cat|dog)s?' } }), (t) => /^(cat|dog)s?$/.test(t)],
    ['chat structured_outputs.choice', chat({ max_tokens: 20, structured_outputs: { choice: ['left', 'right'] } }), (t) => ['left', 'right'].includes(t)],
    ['completions structured_outputs.grammar', completion({ max_tokens: 20, structured_outputs: { grammar: 'root ::= "a" "b"+' } }), (t) => /^ab+$/.test(t)],
    ['SGLang regex', generate({ max_new_tokens: 20, regex: '[A-F]{4}' }), (t) => /^[A-F]{4}$/.test(t)],
    ['SGLang json_schema', generate({ max_new_tokens: 20, json_schema: JSON.stringify(jsonSchema) }), isOkObject],
    ['SGLang ebnf', generate({ max_new_tokens: 20, ebnf: 'root ::= ("x" | "y") "!"' }), (t) => /^[xy]!$/.test(t)],
    ['chat response_format structural_tag (format)', chat({ max_tokens: 30, response_format: { type: 'structural_tag', format: okTag } }), isOkTag],
    ['completions structured_outputs.structural_tag', completion({ max_tokens: 30, structured_outputs: { structural_tag: JSON.stringify({ format: okTag }) } }), isOkTag],
    ['SGLang structural_tag (format)', generate({ max_new_tokens: 30, structural_tag: JSON.stringify({ type: 'structural_tag', format: okTag }) }), isOkTag],
  ];
  for (const [what, [path, body], matches] of cases) {
    it(what, async () => {
      const { status, json } = await post(path, body);
      expect(status, JSON.stringify(json)).toBe(200);
      const text: string = path === '/generate' ? json.text : path === '/v1/completions' ? json.choices[0].text : json.choices[0].message.content;
      expect(matches(text), text).toBe(true);
    });
  }
});

describe('invalid schemas and grammars: 400 naming the field and the problem', () => {
  const cases: [string, readonly [string, object], string, RegExp][] = [
    ['a schema of an unknown type', completion({ guided_json: { type: 'nope' } }), 'guided_json', /Unsupported type "nope"/],
    ['an EBNF grammar with an undefined rule', chat({ guided_grammar: 'root ::= missing' }), 'guided_grammar', /Rule "missing" is not defined/],
    ['an unclosed regex class', generate({ regex: '[a-' }), 'sampling_params.regex', /Unclosed/],
    ['a bad SGLang EBNF', generate({ ebnf: 'root ::= "a' }), 'sampling_params.ebnf', /./],
    ['a structural tag of an unknown format type', chat({ response_format: { type: 'structural_tag', format: { type: 'nope' } } }), 'response_format', /./],
    ['a structural tag whose schema is not an object', generate({ structural_tag: { structures: [{ begin: '<f>', schema: [1], end: '</f>' }], triggers: ['<f'] } }), 'sampling_params.structural_tag.structures[0].schema', /schema/],
    ['a schema property name with a quote (an xgrammar limitation)', chat({ guided_json: { type: 'object', properties: { 'a"b': { type: 'boolean' } } } }), 'guided_json', /./],
  ];
  for (const [what, [path, body], param, message] of cases) {
    it(what, async () => {
      const { status, json } = await post(path, body);
      expect(status, JSON.stringify(json)).toBe(400);
      expect(json.error.param).toBe(param);
      expect(json.error.message).toMatch(message);
    });
  }

  it('the server keeps serving constrained requests after a grammar error', async () => {
    const { status, json } = await post(...completion({ max_tokens: 10, guided_choice: ['fine'] }));
    expect(status).toBe(200);
    expect(json.choices[0].text).toBe('fine');
  });
});

describe('structural_tag in its legacy form (structures and triggers)', () => {
  it('leaves text free until a trigger, then holds the tag to its schema', async () => {
    const { GrammarCompiler } = await import('../../src/grammar/grammar-compiler.js');
    const { openAiGrammar } = await import('../../src/server/protocol/structured-output.js');
    const { loadModel } = await import('../../src/model/load.js');
    const model = loadModel({ modelPath: 'tiny' });
    const schema = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };
    const spec = openAiGrammar({ response_format: { type: 'structural_tag', structures: [{ begin: '<f=weather>', schema, end: '</f>' }], triggers: ['<f='] } })!;
    const compiler = await GrammarCompiler.create(model.tokenizer, model.config.vocabSize, model.stopTokenIds);
    const accepts = async (text: string) => {
      const matcher = await compiler.matcher(await compiler.compile(spec), model.stopTokenIds);
      const all = model.tokenizer.encode(text, false).every((id) => matcher.accept(id));
      matcher.dispose();
      return all;
    };
    expect(await accepts('Let me look. <f=weather>{"city": "Oslo"}</f> Done.')).toBe(true);
    expect(await accepts('Let me look. <f=weather>{"town": "Oslo"}</f>')).toBe(false);
    expect(await accepts('Let me look. <f=time>')).toBe(false);
    compiler.dispose();
  });
});
