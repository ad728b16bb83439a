import { Type, type Static } from '@fastify/type-provider-typebox';
import { Maybe, openObject, Ranged, SamplingFields } from './schema.js';
import { StructuredOutputFields } from './structured-output.js';
import { Tool, ToolCall, ToolChoice } from './tools.js';
import type { UsageInfo } from './usage.js';

const ContentPart = Type.Object(
  {
    type: Type.String(),
    text: Type.Optional(Type.String()),
  },
  openObject,
);

export const ChatMessage = Type.Object(
  {
    role: Type.Union([Type.Literal('system'), Type.Literal('user'), Type.Literal('assistant'), Type.Literal('tool'), Type.Literal('developer')], {
      description: 'one of "system", "user", "assistant", "tool", "developer"',
    }),
    content: Maybe(Type.Union([Type.String(), Type.Array(ContentPart)], { description: 'a string or a list of content parts' })),
    name: Maybe(Type.String()),
    /** Assistant messages: the tools it called. */
    tool_calls: Maybe(Type.Array(ToolCall)),
    /** Tool messages: the call this result answers. */
    tool_call_id: Maybe(Type.String()),
  },
  openObject,
);
export type ChatMessage = Static<typeof ChatMessage>;

/** POST /v1/chat/completions. */
export const ChatCompletionRequest = Type.Object(
  {
    ...SamplingFields,
    messages: Type.Array(ChatMessage, { minItems: 1 }),
    /** The newer OpenAI name of max_tokens. */
    max_completion_tokens: Maybe(Ranged('maxNewTokens')),
    logprobs: Maybe(Type.Boolean()),
    top_logprobs: Maybe(Ranged('logprobs')),
    add_generation_prompt: Maybe(Type.Boolean()),
    ...StructuredOutputFields,
    tools: Maybe(Type.Array(Tool)),
    tool_choice: Maybe(ToolChoice),
    parallel_tool_calls: Maybe(Type.Boolean()),
    functions: Maybe(Type.Unknown()),
    function_call: Maybe(Type.Unknown()),
  },
  openObject,
);
export type ChatCompletionRequest = Static<typeof ChatCompletionRequest>;

export interface ChatTopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface ChatTokenLogprob extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

export interface ChatLogprobs {
  content: ChatTokenLogprob[];
}

export type ChatFinishReason = 'stop' | 'length' | 'abort' | 'tool_calls';

export interface ChatCompletionChoice {
  index: number;
  message: { role: 'assistant'; content: string | null; tool_calls?: ToolCall[] };
  logprobs: ChatLogprobs | null;
  finish_reason: ChatFinishReason | null;
  matched_stop?: string | number | null;
}

export interface ChatCompletionResponse {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: ChatCompletionChoice[];
  usage: UsageInfo;
}

/** A streamed piece of a tool call: id, type and name in its first piece, then argument text. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

export interface ChatCompletionChunkChoice {
  index: number;
  delta: { role?: 'assistant'; content?: string | null; tool_calls?: ToolCallDelta[] };
  logprobs: ChatLogprobs | null;
  finish_reason: ChatFinishReason | null;
  matched_stop?: string | number | null;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: ChatCompletionChunkChoice[];
  usage?: UsageInfo | null;
}
