import { Type, type TSchema } from '@fastify/type-provider-typebox';
import { parameterRanges, type ParameterRange, type RangedParameter } from '../../engine/request-parameters.js';

/** An optional field that clients may also send as null (meaning "use the default"). */
export function Maybe<T extends TSchema>(schema: T) {
  return Type.Optional(Type.Union([schema, Type.Null()]));
}

/** A numeric parameter with the range the engine enforces (request-parameters.ts). */
export function Ranged(parameter: RangedParameter) {
  const range: ParameterRange = parameterRanges[parameter];
  const bounds = {
    ...(range.exclusiveMin ? { exclusiveMinimum: range.min } : { minimum: range.min }),
    ...(range.max !== Infinity ? { maximum: range.max } : {}),
  };
  return range.integer ? Type.Integer(bounds) : Type.Number(bounds);
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
  max_tokens: Maybe(Ranged('maxNewTokens')),
  temperature: Maybe(Ranged('temperature')),
  top_p: Maybe(Ranged('topP')),
  top_k: Maybe(Ranged('topK')),
  min_p: Maybe(Ranged('minP')),
  presence_penalty: Maybe(Ranged('presencePenalty')),
  frequency_penalty: Maybe(Ranged('frequencyPenalty')),
  repetition_penalty: Maybe(Ranged('repetitionPenalty')),
  seed: Maybe(Ranged('seed')),
  n: Maybe(Ranged('n')),
  best_of: Maybe(Ranged('n')),
  stop: Maybe(StopSchema),
  stop_token_ids: Maybe(TokenIds),
  ignore_eos: Maybe(Type.Boolean()),
  skip_special_tokens: Maybe(Type.Boolean()),
  min_tokens: Maybe(Ranged('minTokens')),
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
