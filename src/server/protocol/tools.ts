import { Type, type Static } from '@fastify/type-provider-typebox';
import type { GrammarSpec } from '../../engine/types.js';
import { invalidParam } from '../http/errors.js';
import { Maybe, openObject } from './schema.js';

/** OpenAI's function tools (the only kind of tool chat completions take). */
export const Tool = Type.Object(
  {
    type: Type.Literal('function', { description: '"function"' }),
    function: Type.Object(
      {
        name: Type.String({ pattern: '^[a-zA-Z0-9_-]{1,64}$', description: 'a name of letters, digits, _ and -' }),
        description: Maybe(Type.String()),
        parameters: Maybe(Type.Record(Type.String(), Type.Unknown())),
        strict: Maybe(Type.Boolean()),
      },
      openObject,
    ),
  },
  openObject,
);
export type Tool = Static<typeof Tool>;

export const ToolChoice = Type.Union(
  [
    Type.Literal('none'),
    Type.Literal('auto'),
    Type.Literal('required'),
    Type.Object({ type: Type.Literal('function'), function: Type.Object({ name: Type.String() }, openObject) }, openObject),
  ],
  { description: '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}' },
);
export type ToolChoice = Static<typeof ToolChoice>;

export const ToolCall = Type.Object(
  {
    id: Type.String(),
    type: Type.Literal('function'),
    function: Type.Object({ name: Type.String(), arguments: Type.String() }, openObject),
  },
  openObject,
);
export type ToolCall = Static<typeof ToolCall>;

/** A request's tool setup once checked: what the prompt shows and how the output is read and constrained. */
export interface ToolUse {
  tools: Tool[];
  /** 'none': the model is told of the tools but its output is plain text. */
  choice: 'none' | 'auto' | 'required' | { name: string };
  parallel: boolean;
  /** The grammar of required or named calls; null for auto and none. */
  grammar: GrammarSpec | null;
}

/** Checks tools, tool_choice and parallel_tool_calls together; null when the request has no tools. */
export function toolUse(tools: Tool[] | null | undefined, choice: ToolChoice | null | undefined, parallel: boolean | null | undefined): ToolUse | null {
  if (!tools || tools.length === 0) {
    if (choice != null) throw invalidParam('tool_choice', 'tool_choice needs tools.');
    if (parallel != null) throw invalidParam('parallel_tool_calls', 'parallel_tool_calls needs tools.');
    return null;
  }
  const names = new Set<string>();
  tools.forEach((tool, i) => {
    if (names.has(tool.function.name)) throw invalidParam(`tools[${i}].function.name`, `Two tools are named ${JSON.stringify(tool.function.name)}.`);
    names.add(tool.function.name);
  });
  const resolved: ToolUse['choice'] = typeof choice === 'object' && choice !== null ? { name: choice.function.name } : (choice ?? 'auto');
  if (typeof resolved === 'object' && !names.has(resolved.name)) {
    throw invalidParam('tool_choice', `tool_choice names the function ${JSON.stringify(resolved.name)}, which is not among the tools.`);
  }
  const use: ToolUse = { tools, choice: resolved, parallel: parallel ?? true, grammar: null };
  if (resolved === 'required') use.grammar = callsGrammar(tools, use.parallel);
  else if (typeof resolved === 'object') use.grammar = callsGrammar(tools.filter((t) => t.function.name === resolved.name), false);
  return use;
}

/** Llama 3.1's JSON call format, each call's parameters following its function's schema. */
function callsGrammar(tools: Tool[], parallel: boolean): GrammarSpec {
  const schemas = tools.map((t) => ({ name: t.function.name, schema: JSON.stringify(t.function.parameters ?? { type: 'object' }) }));
  return { type: 'tool_calls', tools: schemas, parallel, param: 'tools' };
}
