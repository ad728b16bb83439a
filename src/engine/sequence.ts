import type { TokenMatcher } from '../grammar/token-matcher.js';
import type { IncrementalDetokenizer } from '../model/tokenizer.js';
import { Rng } from '../model/rng.js';
import type { DeltaStream } from './delta-stream.js';
import { PageList } from './kv-pool.js';
import type { CacheNode } from './prefix-cache.js';
import { StopChecker } from './stop-checker.js';
import type { FinishReason, GenerateDelta, PromptTokenLogprob, RequestTiming, SamplingParams, TokenLogprob } from './types.js';

/** One submitted request: its prompt, parameters, stream and its n samples. */
export class Request {
  readonly sequences: Sequence[] = [];
  unfinished: number;
  /** Samples 1..n-1 start once sample 0 has computed the prompt, so they can share its KV. */
  samplesStarted = false;
  /** When each stage was reached, for the latency metrics. */
  readonly timing: RequestTiming = { arrival: epochMs(), scheduled: null, firstToken: null };
  /** The logit_bias entries; null when there are none. */
  readonly logitBias: SparseBias | null;
  /** The row while fewer than min_tokens were generated: logit_bias with every stop id banned (-inf). */
  readonly logitBiasBeforeMinTokens: SparseBias | null;

  constructor(
    readonly id: string,
    readonly promptIds: readonly number[],
    readonly params: SamplingParams,
    readonly stopTokenIds: ReadonlySet<number>,
    readonly stream: DeltaStream,
    readonly arrival: number,
  ) {
    this.unfinished = params.n;
    this.logitBias = params.logitBias.length > 0 ? sparseBias(new Map(params.logitBias)) : null;
    if (params.minTokens > 0 && stopTokenIds.size > 0) {
      const merged = new Map(params.logitBias);
      for (const id of stopTokenIds) merged.set(id, -Infinity);
      this.logitBiasBeforeMinTokens = sparseBias(merged);
    } else {
      this.logitBiasBeforeMinTokens = this.logitBias;
    }
  }
}

/** One row's LogitBiasBatch entries. */
export interface SparseBias {
  tokenIds: Int32Array;
  bias: Float32Array;
}

function sparseBias(entries: Map<number, number>): SparseBias {
  return { tokenIds: Int32Array.from(entries.keys()), bias: Float32Array.from(entries.values()) };
}

export type SequenceStatus = 'held' | 'waiting' | 'running' | 'finished';

/**
 * One sample of a request: its tokens (prompt then output), the KV pages it holds, and its
 * output state (generator, detokenizer, stop strings, penalty counts).
 */
export class Sequence {
  status: SequenceStatus = 'held';
  readonly tokenIds: number[];
  /** KV pages this sequence holds one reference to, in position order. */
  readonly pages = new PageList();
  /** Positions whose KV has been computed, or is being computed by a step already launched. */
  kvLen = 0;
  /**
   * Tokens sampled by launched steps that have not reached the host yet (0 or 1; 2 for a moment
   * while a step runs ahead of the one before it): the sequence's length counts them already.
   */
  tokensInFlight = 0;
  /** Launched steps this sequence is part of whose output the engine has not taken yet. */
  stepsInFlight = 0;
  /** The row of this sequence in the launched step `launchedStep` that samples its next token. */
  launchedRow = -1;
  launchedStep = -1;
  /** The prefix-cache node this sequence locked when admitted. */
  cacheNode: CacheNode | null = null;
  /** Prompt tokens whose KV came from the prefix cache or a sibling sample at first admission. */
  cachedTokens = -1;
  /** Sample 0 of a request asking prompt log-probs: one entry per prompt position, filled as the prompt is computed; null otherwise. */
  promptLogprobs: PromptTokenLogprob[] | null = null;
  /** Times lpm admitted a later arrival while this sequence waited (bounded, so short prefixes cannot starve). */
  passedOver = 0;
  /** Distinct tokens seen with their output counts, when a penalty is on. */
  readonly penaltyCounts: Map<number, number> | null;
  readonly rng: Rng;
  /** Where the output stands in the request's grammar (structured output); null when unconstrained. */
  matcher: TokenMatcher | null = null;
  private readonly detokenizer: IncrementalDetokenizer;
  private readonly stopChecker: StopChecker;

  constructor(
    readonly request: Request,
    readonly index: number,
    detokenizer: IncrementalDetokenizer,
  ) {
    const p = request.params;
    this.tokenIds = request.promptIds.slice();
    this.rng = new Rng(p.seed === null ? Rng.randomSeed() : p.seed + index);
    this.detokenizer = detokenizer;
    this.stopChecker = new StopChecker(p.stop);
    if (index === 0 && p.promptLogprobs !== null) {
      this.promptLogprobs = request.promptIds.map((tokenId) => ({ tokenId, logprob: NaN, rank: 0, top: [] }));
    }
    const penalized = p.repetitionPenalty !== 1 || p.frequencyPenalty !== 0 || p.presencePenalty !== 0;
    this.penaltyCounts = penalized ? new Map(request.promptIds.map((id) => [id, 0])) : null;
  }

  get numPromptTokens(): number {
    return this.request.promptIds.length;
  }

  get numOutputTokens(): number {
    return this.tokenIds.length - this.request.promptIds.length;
  }

  /** Output tokens with those still on their way from a launched step. */
  get launchedOutputTokens(): number {
    return this.numOutputTokens + this.tokensInFlight;
  }

  /** The logit additions of this sequence's next sampled token (logit_bias, min_tokens' bans); null when none. */
  get logitBias(): SparseBias | null {
    const req = this.request;
    return this.launchedOutputTokens < req.params.minTokens ? req.logitBiasBeforeMinTokens : req.logitBias;
  }

  /**
   * Tokens still to run through the model before the next token can be sampled; 0 once a token
   * in flight is the last max_tokens allows (the sample ends when it arrives).
   */
  get pendingTokens(): number {
    if (this.tokensInFlight > 0 && this.launchedOutputTokens >= this.request.params.maxNewTokens) return 0;
    return this.tokenIds.length + this.tokensInFlight - this.kvLen;
  }

  /** Tokens this sequence may still add to the KV cache, at most. */
  get remainingNewTokens(): number {
    return this.request.params.maxNewTokens - this.numOutputTokens;
  }

  /** Prompt positions before this one may come from the prefix cache: the ones after it need their logits computed. */
  get prefixReuseLimit(): number {
    if (this.promptLogprobs === null || this.numOutputTokens > 0) return Infinity;
    return Math.max(this.request.params.promptLogprobsStart, 1) - 1;
  }

  /** The token whose log-prob row `position` should give (the next prompt token), or -1. */
  promptLogprobTarget(position: number): number {
    if (this.promptLogprobs === null) return -1;
    const next = position + 1;
    if (next >= this.numPromptTokens || next < Math.max(this.request.params.promptLogprobsStart, 1)) return -1;
    return this.request.promptIds[next]!;
  }

  /** Records a sampled token and applies the stop rules; returns the sample's delta. */
  append(token: number, logprob: TokenLogprob | null): GenerateDelta {
    const params = this.request.params;
    this.tokenIds.push(token);
    if (this.penaltyCounts) this.penaltyCounts.set(token, (this.penaltyCounts.get(token) ?? 0) + 1);
    let text = '';
    let finishReason: FinishReason | null = null;
    let matchedStop: string | number | null = null;
    if (this.numOutputTokens < params.minTokens) {
      // min_tokens: stop ids were banned from this token; stop strings are not looked for before it (vLLM).
      text = this.detokenizer.push(token);
    } else if (this.request.stopTokenIds.has(token)) {
      finishReason = 'stop';
      matchedStop = token;
    } else {
      const out = this.stopChecker.push(this.detokenizer.push(token));
      text = out.text;
      if (out.stop !== null) {
        finishReason = 'stop';
        matchedStop = out.stop;
      }
    }
    if (finishReason === null && this.numOutputTokens >= params.maxNewTokens) finishReason = 'length';
    if (typeof matchedStop === 'string' && params.includeStopStr) text += matchedStop;
    if (finishReason !== null && typeof matchedStop !== 'string') {
      const tail = this.stopChecker.push(this.detokenizer.flush());
      text += tail.text;
      if (tail.stop !== null) {
        finishReason = 'stop';
        matchedStop = tail.stop;
        if (params.includeStopStr) text += tail.stop;
      } else {
        text += this.stopChecker.flush();
      }
    }
    return {
      requestId: this.request.id,
      index: this.index,
      text,
      tokenIds: [token],
      logprobs: logprob ? [logprob] : null,
      finishReason,
      matchedStop,
      usage: finishReason ? this.usage() : null,
    };
  }

  /** max_tokens 0 with prompt log-probs: the prompt was computed, and nothing is generated. */
  promptOnlyDelta(): GenerateDelta {
    return { ...this.abortDelta(), logprobs: this.request.params.logprobs === null ? null : [], finishReason: 'length' };
  }

  /** The last delta of a sample aborted before it finished. */
  abortDelta(): GenerateDelta {
    return {
      requestId: this.request.id,
      index: this.index,
      text: '',
      tokenIds: [],
      logprobs: null,
      finishReason: 'abort',
      matchedStop: null,
      usage: this.usage(),
    };
  }

  private usage() {
    return {
      promptTokens: this.numPromptTokens,
      completionTokens: this.numOutputTokens,
      cachedTokens: Math.max(0, this.cachedTokens),
    };
  }
}

/** Milliseconds since the epoch at sub-millisecond resolution. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}
