import { Type, type Static } from '@fastify/type-provider-typebox';
import { Maybe, openObject, Ranged, StopSchema, TokenIds } from './schema.js';
import { SglangStructuredFields } from './structured-output.js';

/** SGLang's sampling_params object (its names and defaults). */
export const SglangSamplingParams = Type.Object(
  {
    max_new_tokens: Maybe(Ranged('maxNewTokens')),
    temperature: Maybe(Ranged('temperature')),
    top_p: Maybe(Ranged('topP')),
    top_k: Maybe(Ranged('topK')),
    min_p: Maybe(Ranged('minP')),
    frequency_penalty: Maybe(Ranged('frequencyPenalty')),
    presence_penalty: Maybe(Ranged('presencePenalty')),
    repetition_penalty: Maybe(Ranged('repetitionPenalty')),
    stop: Maybe(StopSchema),
    stop_token_ids: Maybe(TokenIds),
    ignore_eos: Maybe(Type.Boolean()),
    skip_special_tokens: Maybe(Type.Boolean()),
    n: Maybe(Ranged('n')),
    seed: Maybe(Ranged('seed')),
    sampling_seed: Maybe(Ranged('seed')),
    no_stop_trim: Maybe(Type.Boolean()),
    min_new_tokens: Maybe(Ranged('minTokens')),
    logit_bias: Maybe(Type.Record(Type.String(), Type.Number())),
    ...SglangStructuredFields,
  },
  openObject,
);
export type SglangSamplingParams = Static<typeof SglangSamplingParams>;

/** POST /generate: SGLang's native request (one prompt or a batch). */
export const GenerateRequestBody = Type.Object(
  {
    text: Maybe(Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 })], { description: 'a string or a list of strings' })),
    input_ids: Maybe(
      Type.Union([Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }), Type.Array(TokenIds, { minItems: 1 })], {
        description: 'a list of token ids or a list of token-id lists',
      }),
    ),
    sampling_params: Maybe(SglangSamplingParams),
    stream: Maybe(Type.Boolean()),
    return_logprob: Maybe(Type.Boolean()),
    top_logprobs_num: Maybe(Ranged('logprobs')),
    /** With return_logprob: the first prompt position to return input log-probs for; -1: none. */
    logprob_start_len: Maybe(Type.Integer({ minimum: -1 })),
    rid: Maybe(Type.Union([Type.String(), Type.Array(Type.String())])),
  },
  openObject,
);
export type GenerateRequestBody = Static<typeof GenerateRequestBody>;

export type SglangFinishReason = { type: 'stop'; matched: string | number | null } | { type: 'length'; length: number } | { type: 'abort'; message?: string } | null;

export interface SglangMetaInfo {
  id: string;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  finish_reason: SglangFinishReason;
  e2e_latency: number;
  /** [logprob, token id, token text] per generated token, when return_logprob. */
  output_token_logprobs?: [number, number, string][];
  output_top_logprobs?: [number, number, string][][];
  /** [logprob or null, token id, token text] per prompt token from logprob_start_len (null for the first prompt token). */
  input_token_logprobs?: [number | null, number, string][];
  input_top_logprobs?: ([number, number, string][] | null)[];
}

export interface SglangGenerateResponse {
  text: string;
  output_ids: number[];
  meta_info: SglangMetaInfo;
  /** Position in a batch (prompts times samples), in streamed chunks. */
  index?: number;
}
