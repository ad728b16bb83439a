import { Type } from '@fastify/type-provider-typebox';
import type { GrammarSpec } from '../../engine/types.js';
import { invalidParam } from '../http/errors.js';
import { Maybe, openObject } from './schema.js';

/**
 * The structured-output fields of each API, turned into one GrammarSpec. Every field that
 * constrains the output is either honoured or refused with a 400 naming it; two constraints in
 * one request are refused too.
 */

const JsonSchemaValue = Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Boolean()], { description: 'a JSON schema (an object)' });

/** OpenAI's response_format (chat and completions). */
export const ResponseFormat = Type.Object(
  {
    type: Type.String({ description: '"text", "json_object", "json_schema" or "structural_tag"' }),
    json_schema: Maybe(
      Type.Object(
        {
          name: Type.String(),
          description: Maybe(Type.String()),
          schema: Maybe(JsonSchemaValue),
          strict: Maybe(Type.Boolean()),
        },
        openObject,
      ),
    ),
  },
  openObject,
);

/** vLLM's structured_outputs object (the successor of the guided_* fields). */
const StructuredOutputs = Type.Object(
  {
    json: Maybe(Type.Union([JsonSchemaValue, Type.String()])),
    regex: Maybe(Type.String()),
    choice: Maybe(Type.Array(Type.String(), { minItems: 1 })),
    grammar: Maybe(Type.String()),
    json_object: Maybe(Type.Boolean()),
    disable_fallback: Maybe(Type.Boolean()),
  },
  openObject,
);

/** Fields /v1/completions and /v1/chat/completions share (OpenAI's and vLLM's). */
export const StructuredOutputFields = {
  response_format: Maybe(ResponseFormat),
  guided_json: Maybe(Type.Union([JsonSchemaValue, Type.String()])),
  guided_regex: Maybe(Type.String()),
  guided_choice: Maybe(Type.Array(Type.String(), { minItems: 1 })),
  guided_grammar: Maybe(Type.String()),
  guided_decoding_backend: Maybe(Type.String()),
  guided_whitespace_pattern: Maybe(Type.String()),
  structured_outputs: Maybe(StructuredOutputs),
};

/** SGLang's sampling_params constraint fields (schema and grammar as text). */
export const SglangStructuredFields = {
  regex: Maybe(Type.String()),
  json_schema: Maybe(Type.String()),
  ebnf: Maybe(Type.String()),
  structural_tag: Maybe(Type.Unknown()),
};

type Json = Record<string, unknown>;

export interface OpenAiStructuredFields {
  response_format?: ({ type: string; json_schema?: { name: string; schema?: unknown } | null } & Json) | null;
  guided_json?: unknown;
  guided_regex?: string | null;
  guided_choice?: string[] | null;
  guided_grammar?: string | null;
  guided_decoding_backend?: string | null;
  guided_whitespace_pattern?: string | null;
  structured_outputs?: Json | null;
}

/** The grammar of an OpenAI-style request (chat or completions), or null. */
export function openAiGrammar(body: OpenAiStructuredFields): GrammarSpec | null {
  const found: GrammarSpec[] = [];
  const format = body.response_format;
  if (format != null) {
    if (format.type === 'json_object') found.push({ type: 'json_object', param: 'response_format' });
    else if (format.type === 'json_schema') {
      const js = format.json_schema;
      if (js == null) throw invalidParam('response_format.json_schema', 'response_format of type "json_schema" needs a json_schema object.');
      found.push({ type: 'json_schema', schema: schemaText(js.schema ?? true, 'response_format.json_schema.schema'), param: 'response_format.json_schema.schema' });
    } else if (format.type === 'structural_tag') {
      found.push({ type: 'structural_tag', tag: structuralTagText(format, 'response_format'), param: 'response_format' });
    } else if (format.type !== 'text') {
      throw invalidParam('response_format', `response_format type ${JSON.stringify(format.type)} is not supported (only "text", "json_object", "json_schema" and "structural_tag").`);
    }
  }
  if (body.guided_json != null) found.push({ type: 'json_schema', schema: schemaText(body.guided_json, 'guided_json'), param: 'guided_json' });
  if (body.guided_regex != null) found.push({ type: 'regex', pattern: body.guided_regex, param: 'guided_regex' });
  if (body.guided_choice != null) found.push({ type: 'choice', choices: body.guided_choice, param: 'guided_choice' });
  if (body.guided_grammar != null) found.push({ type: 'ebnf', grammar: body.guided_grammar, param: 'guided_grammar' });
  if (body.guided_whitespace_pattern != null) {
    throw invalidParam('guided_whitespace_pattern', 'guided_whitespace_pattern is not supported (JSON output allows any whitespace).');
  }
  const backend = body.guided_decoding_backend;
  if (backend != null && !/^(auto|xgrammar)(:.*)?$/.test(backend)) {
    throw invalidParam('guided_decoding_backend', `guided_decoding_backend ${JSON.stringify(backend)} is not available (only "xgrammar").`);
  }
  if (body.structured_outputs != null) found.push(...structuredOutputs(body.structured_outputs));
  return single(found);
}

function structuredOutputs(so: Json): GrammarSpec[] {
  const found: GrammarSpec[] = [];
  const known = new Set(['json', 'regex', 'choice', 'grammar', 'json_object', 'structural_tag', 'disable_fallback']);
  for (const [key, value] of Object.entries(so)) {
    if (value == null) continue;
    if (!known.has(key)) throw invalidParam(`structured_outputs.${key}`, `structured_outputs.${key} is not supported.`);
  }
  if (so.json != null) found.push({ type: 'json_schema', schema: schemaText(so.json, 'structured_outputs.json'), param: 'structured_outputs.json' });
  if (so.regex != null) found.push({ type: 'regex', pattern: so.regex as string, param: 'structured_outputs.regex' });
  if (so.choice != null) found.push({ type: 'choice', choices: so.choice as string[], param: 'structured_outputs.choice' });
  if (so.grammar != null) found.push({ type: 'ebnf', grammar: so.grammar as string, param: 'structured_outputs.grammar' });
  if (so.json_object === true) found.push({ type: 'json_object', param: 'structured_outputs.json_object' });
  if (so.structural_tag != null) {
    found.push({ type: 'structural_tag', tag: structuralTagText(so.structural_tag, 'structured_outputs.structural_tag'), param: 'structured_outputs.structural_tag' });
  }
  return found;
}

export interface SglangStructured {
  regex?: string | null;
  json_schema?: string | null;
  ebnf?: string | null;
  structural_tag?: unknown;
}

/** The grammar of SGLang's sampling_params, or null. */
export function sglangGrammar(sp: SglangStructured): GrammarSpec | null {
  const found: GrammarSpec[] = [];
  if (sp.structural_tag != null) {
    found.push({ type: 'structural_tag', tag: structuralTagText(sp.structural_tag, 'sampling_params.structural_tag'), param: 'sampling_params.structural_tag' });
  }
  if (sp.regex != null) found.push({ type: 'regex', pattern: sp.regex, param: 'sampling_params.regex' });
  if (sp.json_schema != null) {
    found.push({ type: 'json_schema', schema: schemaText(sp.json_schema, 'sampling_params.json_schema'), param: 'sampling_params.json_schema' });
  }
  if (sp.ebnf != null) found.push({ type: 'ebnf', grammar: sp.ebnf, param: 'sampling_params.ebnf' });
  return single(found);
}

function single(found: GrammarSpec[]): GrammarSpec | null {
  if (found.length > 1) {
    throw invalidParam(found[1]!.param, `Only one output constraint per request: ${found.map((g) => g.param).join(' and ')} were both given.`);
  }
  return found[0] ?? null;
}

/** A schema given as an object or as JSON text, as canonical JSON text (the compile cache's key). */
function schemaText(schema: unknown, param: string): string {
  let value = schema;
  if (typeof schema === 'string') {
    try {
      value = JSON.parse(schema);
    } catch (e) {
      throw invalidParam(param, `${param} is not valid JSON: ${(e as Error).message}`);
    }
  }
  if (typeof value === 'boolean') value = value ? {} : { not: {} };
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalidParam(param, `${param} must be a JSON schema object.`);
  return JSON.stringify(value);
}

/**
 * A structural tag as xgrammar's JSON text ({"type": "structural_tag", "format": ...}), from
 * either form vLLM and SGLang accept (an object or its JSON text): the current one, with
 * `format`, or the legacy one, `structures` ({begin, schema, end}) dispatched on `triggers`,
 * which is xgrammar's triggered_tags format.
 */
function structuralTagText(given: unknown, param: string): string {
  let value = given;
  if (typeof given === 'string') {
    try {
      value = JSON.parse(given);
    } catch (e) {
      throw invalidParam(param, `${param} is not valid JSON: ${(e as Error).message}`);
    }
  }
  const tag = (value ?? {}) as Json;
  if (typeof value !== 'object' || Array.isArray(value)) throw invalidParam(param, `${param} must be a structural tag object.`);
  if (tag.format != null) {
    const format = tag.format as Json;
    if (typeof format !== 'object' || Array.isArray(format) || typeof format.type !== 'string') {
      throw invalidParam(param, `${param}: the structural tag's format must be an object with a "type".`);
    }
    return JSON.stringify({ type: 'structural_tag', format });
  }
  const { structures, triggers } = tag;
  const isText = (x: unknown) => typeof x === 'string';
  if (!Array.isArray(structures) || !Array.isArray(triggers) || !triggers.every((t) => isText(t) && t !== '')) {
    throw invalidParam(param, `${param}: a structural tag needs a "format", or "structures" and "triggers" (non-empty strings).`);
  }
  const tags = structures.map((item: Json, i) => {
    if (item === null || typeof item !== 'object' || !isText(item.begin) || !isText(item.end)) {
      throw invalidParam(param, `${param}: structures[${i}] needs "begin" and "end" strings and a "schema".`);
    }
    const schema = JSON.parse(schemaText(item.schema ?? true, `${param}.structures[${i}].schema`));
    return { type: 'tag', begin: item.begin, content: { type: 'json_schema', json_schema: schema }, end: item.end };
  });
  return JSON.stringify({ type: 'structural_tag', format: { type: 'triggered_tags', triggers, tags, at_least_one: false, stop_after_first: false } });
}
