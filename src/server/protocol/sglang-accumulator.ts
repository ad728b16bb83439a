import type { GenerateDelta } from '../../engine/types.js';
import type { Accumulator, Fold } from './accumulator.js';
import type { SglangFinishReason, SglangGenerateResponse } from './sglang.js';
import type { TokenText } from './token-text.js';
import { UsageTally } from './usage.js';

export interface SglangSetup {
  /** Request id per prompt. */
  ids: string[];
  promptLengths: number[];
  /** Samples per prompt; output index = prompt * n + sample. */
  n: number;
  /** return_logprob was set. */
  logprobs: boolean;
  /** logprob_start_len when input log-probs were asked, else null. */
  inputLogprobsStart?: number | null;
  /** One prompt given as a string or a flat id list, with n = 1: the response is one object, not a list. */
  single: boolean;
  /** Seconds since the request arrived. */
  elapsedSeconds: () => number;
  tokenText: TokenText;
}

/**
 * SGLang's /generate: each chunk is the output's cumulative state so far (SGLang streams whole
 * text and ids, not increments), with `index` when there are several outputs; so the fold keeps
 * each output's last chunk. A chunk is live state: send or fold it before the next delta.
 */
export class SglangAccumulator implements Accumulator<SglangGenerateResponse, SglangGenerateResponse | SglangGenerateResponse[]> {
  readonly usage: UsageTally;
  private readonly outputs: SglangGenerateResponse[];

  constructor(private readonly setup: SglangSetup) {
    this.usage = new UsageTally(setup.promptLengths);
    this.outputs = Array.from({ length: setup.promptLengths.length * setup.n }, (_, index) => {
      const prompt = Math.floor(index / setup.n);
      return {
        text: '',
        output_ids: [],
        meta_info: {
          id: setup.ids[prompt]!,
          prompt_tokens: setup.promptLengths[prompt]!,
          completion_tokens: 0,
          cached_tokens: 0,
          finish_reason: null,
          e2e_latency: 0,
          ...(setup.logprobs ? { output_token_logprobs: [], output_top_logprobs: [] } : {}),
        },
      };
    });
  }

  opening(): SglangGenerateResponse[] {
    return [];
  }

  chunk(prompt: number, delta: GenerateDelta): SglangGenerateResponse {
    this.usage.add(prompt, delta);
    const index = prompt * this.setup.n + delta.index;
    const out = this.outputs[index]!;
    out.text += delta.text;
    out.output_ids.push(...delta.tokenIds);
    const meta = out.meta_info;
    meta.completion_tokens = out.output_ids.length;
    meta.e2e_latency = this.setup.elapsedSeconds();
    if (delta.usage) meta.cached_tokens = delta.usage.cachedTokens;
    if (delta.finishReason !== null) meta.finish_reason = finishReason(delta, out.output_ids.length);
    const tokenText = this.setup.tokenText;
    const start = this.setup.inputLogprobsStart;
    if (delta.promptLogprobs && start != null && meta.input_token_logprobs === undefined) {
      const entries = delta.promptLogprobs.slice(start);
      meta.input_token_logprobs = entries.map((e) => [Number.isNaN(e.logprob) ? null : e.logprob, e.tokenId, tokenText.text(e.tokenId)]);
      meta.input_top_logprobs = entries.map((e) => (Number.isNaN(e.logprob) ? null : e.top.map((t) => [t.logprob, t.tokenId, tokenText.text(t.tokenId)])));
    }
    for (const lp of delta.logprobs ?? []) {
      meta.output_token_logprobs?.push([lp.logprob, lp.tokenId, tokenText.text(lp.tokenId)]);
      meta.output_top_logprobs?.push(lp.top.map((t) => [t.logprob, t.tokenId, tokenText.text(t.tokenId)]));
    }
    return this.outputs.length > 1 ? { ...out, index } : out;
  }

  closing(): SglangGenerateResponse[] {
    return [];
  }

  fold(): Fold<SglangGenerateResponse, SglangGenerateResponse | SglangGenerateResponse[]> {
    const outputs: SglangGenerateResponse[] = [];
    return {
      add(chunk) {
        const { index, ...output } = chunk;
        outputs[index ?? 0] = output;
      },
      result: () => (this.setup.single && this.outputs.length === 1 ? outputs[0]! : outputs),
    };
  }
}

function finishReason(delta: GenerateDelta, length: number): SglangFinishReason {
  switch (delta.finishReason) {
    case 'stop':
      return { type: 'stop', matched: delta.matchedStop };
    case 'length':
      return { type: 'length', length };
    case 'abort':
      return { type: 'abort' };
    default:
      return null;
  }
}
