import { Type, type Static } from '@fastify/type-provider-typebox';
import { ChatMessage } from './chat.js';
import { Maybe, openObject, TokenIds } from './schema.js';

/** POST /tokenize as vLLM has it: a prompt, or chat messages rendered through the template. */
export const TokenizeRequest = Type.Union(
  [
    Type.Object(
      {
        model: Maybe(Type.String()),
        prompt: Type.String(),
        add_special_tokens: Maybe(Type.Boolean()),
        return_token_strs: Maybe(Type.Boolean()),
      },
      openObject,
    ),
    Type.Object(
      {
        model: Maybe(Type.String()),
        messages: Type.Array(ChatMessage, { minItems: 1 }),
        add_generation_prompt: Maybe(Type.Boolean()),
        add_special_tokens: Maybe(Type.Boolean()),
        return_token_strs: Maybe(Type.Boolean()),
      },
      openObject,
    ),
  ],
  { description: 'an object with either "prompt" (a string) or "messages"' },
);
export type TokenizeRequest = Static<typeof TokenizeRequest>;

export interface TokenizeResponse {
  count: number;
  max_model_len: number;
  tokens: number[];
  token_strs?: string[];
}

export const DetokenizeRequest = Type.Object({ model: Maybe(Type.String()), tokens: TokenIds }, openObject);
export type DetokenizeRequest = Static<typeof DetokenizeRequest>;

export interface DetokenizeResponse {
  prompt: string;
}
