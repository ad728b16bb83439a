import { ContextLengthError, InvalidRequestError } from './errors.js';
import { defaultSamplingParams, type GenerateRequest, type SamplingParams } from './types.js';

export const maxLogprobs = 20;
export const maxSamples = 128;

/**
 * Fills a request's sampling parameters with the defaults and checks every value, throwing
 * InvalidRequestError (param = the OpenAI-style name) or ContextLengthError.
 */
export function resolveRequest(request: GenerateRequest, vocabSize: number, contextLength: number): SamplingParams {
  const ids = request.promptTokenIds;
  if (!Array.isArray(ids)) throw new InvalidRequestError('the prompt must be a list of token ids', 'prompt');
  if (ids.length === 0) throw new InvalidRequestError('the prompt is empty', 'prompt');
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new InvalidRequestError(`prompt token id ${id} is not an integer in [0, ${vocabSize})`, 'prompt');
    }
  }
  const p: SamplingParams = { ...defaultSamplingParams };
  for (const [key, value] of Object.entries(request.params ?? {})) {
    if (value !== undefined && key in p) (p as unknown as Record<string, unknown>)[key] = value;
  }
  integerIn(p.maxNewTokens, 1, Infinity, 'max_tokens');
  numberIn(p.temperature, 0, Infinity, 'temperature');
  numberIn(p.topP, Number.MIN_VALUE, 1, 'top_p');
  integerIn(p.topK, -1, Infinity, 'top_k');
  numberIn(p.minP, 0, 1, 'min_p');
  numberIn(p.frequencyPenalty, -2, 2, 'frequency_penalty');
  numberIn(p.presencePenalty, -2, 2, 'presence_penalty');
  numberIn(p.repetitionPenalty, Number.MIN_VALUE, 2, 'repetition_penalty');
  integerIn(p.n, 1, maxSamples, 'n');
  if (p.seed !== null) integerIn(p.seed, -(2 ** 53), 2 ** 53, 'seed');
  if (p.logprobs !== null) integerIn(p.logprobs, 0, maxLogprobs, 'logprobs');
  if (!Array.isArray(p.stop) || p.stop.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new InvalidRequestError('stop must be a list of non-empty strings', 'stop');
  }
  if (!Array.isArray(p.stopTokenIds)) throw new InvalidRequestError('stop_token_ids must be a list of token ids', 'stop_token_ids');
  for (const id of p.stopTokenIds) integerIn(id, 0, vocabSize - 1, 'stop_token_ids');
  if (typeof p.ignoreEos !== 'boolean') throw new InvalidRequestError('ignore_eos must be a boolean', 'ignore_eos');
  if (typeof p.skipSpecialTokens !== 'boolean') {
    throw new InvalidRequestError('skip_special_tokens must be a boolean', 'skip_special_tokens');
  }
  if (ids.length + p.maxNewTokens > contextLength) throw new ContextLengthError(contextLength, ids.length, p.maxNewTokens);
  return p;
}

function numberIn(value: unknown, min: number, max: number, param: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new InvalidRequestError(`${param} must be a number in [${min === Number.MIN_VALUE ? '>0' : min}, ${max}], got ${JSON.stringify(value)}`, param);
  }
}

function integerIn(value: unknown, min: number, max: number, param: string): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new InvalidRequestError(`${param} must be an integer ${range}, got ${JSON.stringify(value)}`, param);
  }
}
