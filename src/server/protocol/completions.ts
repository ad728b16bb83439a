import { Type, type Static } from '@fastify/type-provider-typebox';
import { Maybe, openObject, Ranged, SamplingFields, TokenIds } from './schema.js';
import { StructuredOutputFields } from './structured-output.js';
import type { UsageInfo } from './usage.js';

/** POST /v1/completions, as OpenAI documents it plus vLLM's and SGLang's extras. */
export const CompletionRequest = Type.Object(
  {
    ...SamplingFields,
    ...StructuredOutputFields,
    prompt: Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 }), Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }), Type.Array(TokenIds, { minItems: 1 })], {
      description: 'a string, a list of strings, a list of token ids or a list of token-id lists',
    }),
    /** OpenAI: an integer; the sampled token's log-prob plus this many alternatives. */
    logprobs: Maybe(Ranged('logprobs')),
    echo: Maybe(Type.Boolean()),
    /** vLLM: log-probs of the prompt's tokens, with this many alternatives. */
    prompt_logprobs: Maybe(Ranged('logprobs')),
    suffix: Maybe(Type.String()),
  },
  openObject,
);
export type CompletionRequest = Static<typeof CompletionRequest>;

export interface CompletionLogprobs {
  tokens: string[];
  /** null for the prompt's first token (echo). */
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[] | null;
  text_offset: number[];
}

export interface CompletionChoice {
  index: number;
  text: string;
  logprobs: CompletionLogprobs | null;
  /** vLLM's prompt_logprobs: per prompt token, by token id (null for the first). */
  prompt_logprobs?: (Record<string, { logprob: number; rank: number; decoded_token: string }> | null)[];
  finish_reason: 'stop' | 'length' | 'abort' | null;
  /** SGLang and vLLM extra: the stop string or token id that ended the choice. */
  matched_stop?: string | number | null;
}

export interface CompletionResponse {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: UsageInfo | null;
}
