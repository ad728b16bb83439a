import type { GenerateDelta } from '../../engine/types.js';

export interface UsageInfo {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number } | null;
}

export function usageInfo(promptTokens: number, completionTokens: number, cachedTokens: number): UsageInfo {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

/** Adds up token usage over the prompts and samples of one HTTP request. */
export class UsageTally {
  readonly promptTokens: number;
  private readonly cached: number[];
  completionTokens = 0;

  constructor(promptLengths: number[]) {
    this.promptTokens = promptLengths.reduce((a, b) => a + b, 0);
    this.cached = promptLengths.map(() => 0);
  }

  add(prompt: number, delta: GenerateDelta): void {
    this.completionTokens += delta.tokenIds.length;
    if (delta.usage) this.cached[prompt] = Math.max(this.cached[prompt]!, delta.usage.cachedTokens);
  }

  /** Tokens generated but not returned (best_of's other samples): billed all the same, as OpenAI does. */
  addUnreturned(tokens: number): void {
    this.completionTokens += tokens;
  }

  info(): UsageInfo {
    return usageInfo(this.promptTokens, this.completionTokens, this.cached.reduce((a, b) => a + b, 0));
  }
}
