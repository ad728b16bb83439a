import type { SamplingParams } from '../../engine/types.js';
import { InvalidRequestError } from '../../engine/errors.js';

/**
 * The OpenAI-style fields both /v1/completions and /v1/chat/completions accept (and SGLang's
 * sampling_params shares), turned into the engine's SamplingParams. Null or absent means "the
 * default": the engine fills it from request-parameters.ts and checks every value.
 */
export interface OpenAiSamplingFields {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  seed?: number | null;
  n?: number | null;
  best_of?: number | null;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  ignore_eos?: boolean | null;
  skip_special_tokens?: boolean | null;
  min_tokens?: number | null;
  /** SGLang's name of min_tokens. */
  min_new_tokens?: number | null;
  include_stop_str_in_output?: boolean | null;
  /** SGLang's name of include_stop_str_in_output. */
  no_stop_trim?: boolean | null;
  logit_bias?: Record<string, number> | null;
}

export function toSamplingParams(body: OpenAiSamplingFields, maxNewTokens: number, logprobs: number | null): Partial<SamplingParams> {
  refuseUnsupported(body as Record<string, unknown>);
  const given = <T>(value: T | null | undefined): T | undefined => value ?? undefined;
  return {
    maxNewTokens,
    temperature: given(body.temperature),
    topP: given(body.top_p),
    topK: given(body.top_k),
    minP: given(body.min_p),
    seed: body.seed ?? null,
    presencePenalty: given(body.presence_penalty),
    frequencyPenalty: given(body.frequency_penalty),
    repetitionPenalty: given(body.repetition_penalty),
    stop: body.stop == null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop,
    stopTokenIds: given(body.stop_token_ids),
    ignoreEos: given(body.ignore_eos),
    n: given(body.n),
    logprobs,
    skipSpecialTokens: given(body.skip_special_tokens),
    includeStopStr: given(body.include_stop_str_in_output ?? body.no_stop_trim),
    logitBias: body.logit_bias == null ? undefined : logitBiasEntries(body.logit_bias),
    minTokens: given(body.min_tokens ?? body.min_new_tokens),
  };
}

/** OpenAI's logit_bias object (token id as a string -> bias) as [id, bias] pairs; the engine checks ids and ranges. */
function logitBiasEntries(bias: Record<string, number>): [number, number][] {
  return Object.entries(bias).map(([key, value]) => {
    if (!/^\d+$/.test(key)) throw new InvalidRequestError(`logit_bias: the key ${JSON.stringify(key)} is not a token id`, 'logit_bias');
    return [Number(key), value];
  });
}

/**
 * Fields the peers have and sluice does not implement: a request that uses one is refused with
 * its name, never answered as if it had not been sent. Absent, null, false, 0 and [] count as
 * not used.
 */
const unsupportedFields = [
  'use_beam_search',
  'lora_request',
  'lora_path',
  'image_data',
  'return_hidden_states',
  'audio',
  'modalities',
  'suffix',
] as const;

export function refuseUnsupported(body: Record<string, unknown>): void {
  for (const field of unsupportedFields) {
    const value = body[field];
    if (value == null || value === false || value === 0 || (Array.isArray(value) && value.length === 0)) continue;
    if (field === 'modalities' && Array.isArray(value) && value.every((m) => m === 'text')) continue;
    throw new InvalidRequestError(`${field} is not supported by this server.`, field);
  }
}
