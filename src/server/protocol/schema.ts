import { Type, type TSchema } from '@fastify/type-provider-typebox';

/** An optional field that clients may also send as null (meaning "use the default"). */
export function Maybe<T extends TSchema>(schema: T) {
  return Type.Optional(Type.Union([schema, Type.Null()]));
}

export const TokenIds = Type.Array(Type.Integer({ minimum: 0 }));

export const StopSchema = Type.Union([Type.String(), Type.Array(Type.String())], {
  description: 'a string or a list of strings',
});

/**
 * Sampling fields shared by /v1/completions and /v1/chat/completions: the OpenAI ones and the
 * vLLM/SGLang extras that benchmark clients send.
 */
export const SamplingFields = {
  model: Maybe(Type.String()),
  max_tokens: Maybe(Type.Integer({ minimum: 0 })),
  temperature: Maybe(Type.Number({ minimum: 0 })),
  top_p: Maybe(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
  top_k: Maybe(Type.Integer({ minimum: -1 })),
  min_p: Maybe(Type.Number({ minimum: 0, maximum: 1 })),
  presence_penalty: Maybe(Type.Number({ minimum: -2, maximum: 2 })),
  frequency_penalty: Maybe(Type.Number({ minimum: -2, maximum: 2 })),
  repetition_penalty: Maybe(Type.Number({ exclusiveMinimum: 0 })),
  seed: Maybe(Type.Integer()),
  n: Maybe(Type.Integer({ minimum: 1, maximum: 128 })),
  best_of: Maybe(Type.Integer({ minimum: 1, maximum: 128 })),
  stop: Maybe(StopSchema),
  stop_token_ids: Maybe(TokenIds),
  ignore_eos: Maybe(Type.Boolean()),
  skip_special_tokens: Maybe(Type.Boolean()),
  min_tokens: Maybe(Type.Integer({ minimum: 0 })),
  include_stop_str_in_output: Maybe(Type.Boolean()),
  logit_bias: Maybe(Type.Record(Type.String(), Type.Number())),
  stream: Maybe(Type.Boolean()),
  stream_options: Maybe(
    Type.Object({
      include_usage: Maybe(Type.Boolean()),
    }),
  ),
  user: Maybe(Type.String()),
};

/** Request bodies may carry fields we do not know (clients send many); they are ignored. */
export const openObject = { additionalProperties: true } as const;
