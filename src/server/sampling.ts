import type { SamplingParams } from '../engine/types.js';
import { invalidParam } from './errors.js';

/**
 * The OpenAI-style fields both /v1/completions and /v1/chat/completions accept (nulls mean
 * "default"), turned into the engine's SamplingParams.
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
  include_stop_str_in_output?: boolean | null;
  logit_bias?: Record<string, number> | null;
}

/** Default max_tokens of /v1/completions (OpenAI's documented default). */
export const defaultCompletionMaxTokens = 16;

export function toSamplingParams(
  body: OpenAiSamplingFields,
  maxNewTokens: number,
  logprobs: number | null,
  vocabSize: number,
): Partial<SamplingParams> {
  const n = body.n ?? 1;
  if (body.best_of != null && body.best_of !== n) {
    throw invalidParam('best_of', `best_of (${body.best_of}) different from n (${n}) is not supported.`);
  }
  if (body.min_tokens) throw invalidParam('min_tokens', 'min_tokens is not supported.');
  if (body.include_stop_str_in_output) throw invalidParam('include_stop_str_in_output', 'include_stop_str_in_output is not supported.');
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) throw invalidParam('logit_bias', 'logit_bias is not supported.');
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  if (stop.some((s) => s.length === 0)) throw invalidParam('stop', 'stop strings must not be empty.');
  const stopTokenIds = body.stop_token_ids ?? [];
  const badId = stopTokenIds.find((id) => id >= vocabSize);
  if (badId !== undefined) throw invalidParam('stop_token_ids', `stop_token_ids: ${badId} is not a token id below ${vocabSize}.`);
  const params: Partial<SamplingParams> = {
    maxNewTokens,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k ?? 0,
    minP: body.min_p ?? 0,
    seed: body.seed ?? null,
    presencePenalty: body.presence_penalty ?? 0,
    frequencyPenalty: body.frequency_penalty ?? 0,
    repetitionPenalty: body.repetition_penalty ?? 1,
    stop,
    stopTokenIds,
    ignoreEos: body.ignore_eos ?? false,
    n,
    logprobs,
    skipSpecialTokens: body.skip_special_tokens ?? true,
  };
  return params;
}
