import { ContextLengthError, InvalidRequestError } from './errors.js';
import {
  defaultSamplingParams,
  describeRange,
  inRange,
  parameterRanges,
  type ModelSamplingDefaults,
  type RangedParameter,
} from './request-parameters.js';
import type { GenerateRequest, SamplingParams } from './types.js';

/**
 * Fills a request's sampling parameters with the model's defaults (generation_config.json), then
 * the engine's, and checks every value against the
 * limits of request-parameters.ts, throwing InvalidRequestError (param = the OpenAI-style name;
 * "prompt" for the prompt) or ContextLengthError.
 */
export function resolveRequest(
  request: GenerateRequest,
  vocabSize: number,
  contextLength: number,
  modelDefaults: ModelSamplingDefaults = {},
): SamplingParams {
  const ids = request.promptTokenIds;
  if (!Array.isArray(ids)) throw new InvalidRequestError('the prompt must be a list of token ids', 'prompt');
  if (ids.length === 0) throw new InvalidRequestError('the prompt is empty', 'prompt');
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new InvalidRequestError(`prompt token id ${id} is not an integer in [0, ${vocabSize})`, 'prompt');
    }
  }
  const p: SamplingParams = { ...defaultSamplingParams, ...modelDefaults };
  for (const [key, value] of Object.entries(request.params ?? {})) {
    if (value !== undefined && key in p) (p as unknown as Record<string, unknown>)[key] = value;
  }
  for (const key of Object.keys(parameterRanges) as RangedParameter[]) {
    if (key === 'seed' || key === 'logprobs') {
      if (p[key] !== null) checkRange(p[key], key);
    } else {
      checkRange(p[key], key);
    }
  }
  if (!Array.isArray(p.stop) || p.stop.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new InvalidRequestError('stop must be a list of non-empty strings', 'stop');
  }
  if (!Array.isArray(p.stopTokenIds)) throw new InvalidRequestError('stop_token_ids must be a list of token ids', 'stop_token_ids');
  for (const id of p.stopTokenIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new InvalidRequestError(`stop_token_ids: ${JSON.stringify(id)} is not a token id in [0, ${vocabSize})`, 'stop_token_ids');
    }
  }
  if (typeof p.ignoreEos !== 'boolean') throw new InvalidRequestError('ignore_eos must be a boolean', 'ignore_eos');
  if (typeof p.skipSpecialTokens !== 'boolean') {
    throw new InvalidRequestError('skip_special_tokens must be a boolean', 'skip_special_tokens');
  }
  if (typeof p.includeStopStr !== 'boolean') throw new InvalidRequestError('include_stop_str_in_output must be a boolean', 'include_stop_str_in_output');
  if (p.promptLogprobs !== null) {
    checkRange(p.promptLogprobs, 'logprobs');
    if (!Number.isInteger(p.promptLogprobsStart) || p.promptLogprobsStart < 0 || p.promptLogprobsStart >= ids.length) {
      throw new InvalidRequestError(`logprob_start_len must be an integer in [0, ${ids.length}) (the prompt has ${ids.length} tokens), got ${p.promptLogprobsStart}`, 'logprob_start_len');
    }
  }
  checkLogitBias(p.logitBias, vocabSize);
  if (p.minTokens > p.maxNewTokens) {
    throw new InvalidRequestError(`min_tokens (${p.minTokens}) must be less than or equal to max_tokens (${p.maxNewTokens})`, 'min_tokens');
  }
  if (ids.length + p.maxNewTokens > contextLength) throw new ContextLengthError(contextLength, ids.length, p.maxNewTokens);
  return p;
}

/** OpenAI's rule: token ids of the vocabulary, biases in [-100, 100], each id once. */
function checkLogitBias(bias: unknown, vocabSize: number): void {
  if (!Array.isArray(bias)) throw new InvalidRequestError('logit_bias must map token ids to numbers', 'logit_bias');
  const seen = new Set<number>();
  for (const entry of bias as unknown[]) {
    const [id, value] = Array.isArray(entry) ? entry : [];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new InvalidRequestError(`logit_bias: ${JSON.stringify(id)} is not a token id in [0, ${vocabSize})`, 'logit_bias');
    }
    if (typeof value !== 'number' || !(value >= -100 && value <= 100)) {
      throw new InvalidRequestError(`logit_bias: the bias of token ${id} must be a number in [-100, 100], got ${JSON.stringify(value)}`, 'logit_bias');
    }
    if (seen.has(id)) throw new InvalidRequestError(`logit_bias: token ${id} is given twice`, 'logit_bias');
    seen.add(id);
  }
}

function checkRange(value: unknown, key: RangedParameter): void {
  const range = parameterRanges[key];
  if (!inRange(value, range)) throw new InvalidRequestError(`${range.wire} must be ${describeRange(range)}, got ${JSON.stringify(value)}`, range.wire);
}
