import { UserError } from '../errors.js';
import type { SamplingParams } from './types.js';

/**
 * The one home of request-parameter defaults and limits: the HTTP schemas (src/server/protocol),
 * the routes and the engine's checks (params.ts) all read them here, so they cannot disagree.
 */

/** What a request gets for each sampling parameter it leaves out. */
export const defaultSamplingParams: SamplingParams = {
  maxNewTokens: 16,
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: null,
  frequencyPenalty: 0,
  presencePenalty: 0,
  repetitionPenalty: 1,
  stop: [],
  stopTokenIds: [],
  ignoreEos: false,
  n: 1,
  logprobs: null,
  skipSpecialTokens: true,
  grammar: null,
  promptLogprobs: null,
  promptLogprobsStart: 0,
  includeStopStr: false,
  logitBias: [],
  minTokens: 0,
};

/** max_tokens when a request gives none, per API (each follows the API it copies). */
export const defaultMaxTokens = {
  /** OpenAI's documented default for /v1/completions. */
  completions: defaultSamplingParams.maxNewTokens,
  /** SGLang's default max_new_tokens for /generate. */
  generate: 128,
  /**
   * /v1/chat/completions: generation_config.json's max_new_tokens when the model has one (vLLM's
   * default), never more than what the context has left after the prompt; at least 1.
   */
  chat: (contextLength: number, promptTokens: number, modelDefault?: number): number =>
    Math.max(1, Math.min(contextLength - promptTokens, modelDefault ?? Infinity)),
} as const;

/** An allowed range: `integer` or any finite number, `min` inclusive unless `exclusiveMin`. */
export interface ParameterRange {
  integer: boolean;
  min: number;
  exclusiveMin?: boolean;
  max: number;
}

/** The numeric sampling parameters' ranges, by SamplingParams field; `wire` is the OpenAI name errors use. */
export const parameterRanges = {
  /** 0 finishes at once with no tokens (SGLang accepts it; its benchmark's random dataset sends it). */
  maxNewTokens: { wire: 'max_tokens', integer: true, min: 0, max: Infinity },
  temperature: { wire: 'temperature', integer: false, min: 0, max: Infinity },
  topP: { wire: 'top_p', integer: false, min: 0, exclusiveMin: true, max: 1 },
  /** 0 or -1: off. */
  topK: { wire: 'top_k', integer: true, min: -1, max: Infinity },
  minP: { wire: 'min_p', integer: false, min: 0, max: 1 },
  frequencyPenalty: { wire: 'frequency_penalty', integer: false, min: -2, max: 2 },
  presencePenalty: { wire: 'presence_penalty', integer: false, min: -2, max: 2 },
  repetitionPenalty: { wire: 'repetition_penalty', integer: false, min: 0, exclusiveMin: true, max: 2 },
  /** Parallel samples of one prompt (also bounds best_of). */
  n: { wire: 'n', integer: true, min: 1, max: 128 },
  /** Top alternatives per token (logprobs, top_logprobs, top_logprobs_num). */
  logprobs: { wire: 'logprobs', integer: true, min: 0, max: 20 },
  /** Generated tokens before a stop id or string may end the output (also bounded by max_tokens). */
  minTokens: { wire: 'min_tokens', integer: true, min: 0, max: Infinity },
  /** Integers JSON carries exactly. */
  seed: { wire: 'seed', integer: true, min: -(2 ** 53), max: 2 ** 53 },
} as const satisfies Partial<Record<keyof SamplingParams, ParameterRange & { wire: string }>>;

export type RangedParameter = keyof typeof parameterRanges;

export function inRange(value: unknown, range: ParameterRange): value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || (range.integer && !Number.isInteger(value))) return false;
  return (range.exclusiveMin ? value > range.min : value >= range.min) && value <= range.max;
}

/** "an integer in [1, 128]", "a number in (0, 1]", "an integer >= -1" */
export function describeRange(range: ParameterRange): string {
  const kind = range.integer ? 'an integer' : 'a number';
  const low = `${range.exclusiveMin ? '(' : '['}${range.min}`;
  if (range.max === Infinity) return `${kind} ${range.exclusiveMin ? '>' : '>='} ${range.min}`;
  return `${kind} in ${low}, ${range.max}]`;
}

/**
 * generation_config.json fields a model's authors set as its sampling defaults, by SamplingParams
 * field: applied when a request leaves the parameter out (as vLLM's --generation-config auto).
 * max_new_tokens becomes the default max_tokens, as in vLLM, where a request can leave it unset
 * (chat; /v1/completions defaults to 16 and /generate to 128 as vLLM and SGLang do); max_length
 * is not read, as vLLM does not.
 */
export const generationConfigFields = {
  max_new_tokens: 'maxNewTokens',
  temperature: 'temperature',
  top_p: 'topP',
  top_k: 'topK',
  min_p: 'minP',
  repetition_penalty: 'repetitionPenalty',
} as const satisfies Record<string, RangedParameter>;

export type ModelSamplingDefaults = Partial<Pick<SamplingParams, (typeof generationConfigFields)[keyof typeof generationConfigFields]>>;

/** The sampling defaults in a generation_config.json object; a value outside the request range is an error naming `file`. */
export function samplingDefaultsFrom(generationConfig: Record<string, unknown>, file: string): ModelSamplingDefaults {
  const out: ModelSamplingDefaults = {};
  for (const [field, key] of Object.entries(generationConfigFields)) {
    const value = generationConfig[field];
    if (value === undefined || value === null) continue;
    const range = parameterRanges[key];
    if (!inRange(value, range)) throw new UserError(`${file}: ${field} must be ${describeRange(range)}, got ${JSON.stringify(value)}`);
    out[key] = value;
  }
  return out;
}
