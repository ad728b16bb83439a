/**
 * The engine's public vocabulary: what the server, `sluice generate` and the benchmarks use.
 * The engine owns scheduling, the KV pool, the prefix cache, detokenization and stop rules.
 */

export interface SamplingParams {
  /** Tokens to generate at most (finish reason "length" when reached). */
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  /** 0 or -1 = off. */
  topK: number;
  minP: number;
  /** Makes sampling reproducible for this request whatever else is batched. */
  seed: number | null;
  frequencyPenalty: number;
  presencePenalty: number;
  repetitionPenalty: number;
  /** Strings that end generation; never part of the returned text. */
  stop: string[];
  /** Token ids that end generation (in addition to the model's EOS unless ignoreEos). */
  stopTokenIds: number[];
  ignoreEos: boolean;
  /** Parallel samples of one prompt, sharing its KV. */
  n: number;
  /** null: none; 0: the sampled token's log-prob; k > 0: also the top k alternatives. */
  logprobs: number | null;
  skipSpecialTokens: boolean;
  /** Constrains the output to a grammar (structured output); null: unconstrained. */
  grammar: GrammarSpec | null;
  /** Log-probs of the prompt's tokens (null: none; k: with the top k alternatives), from promptLogprobsStart on. */
  promptLogprobs: number | null;
  /** The first prompt position whose log-prob is wanted (SGLang's logprob_start_len). */
  promptLogprobsStart: number;
  /** Keep the matched stop string at the end of the text (vLLM include_stop_str_in_output, SGLang no_stop_trim). */
  includeStopStr: boolean;
  /** [token id, bias in [-100, 100]] pairs added to the logits before sampling (OpenAI logit_bias); ids distinct. */
  logitBias: [number, number][];
  /** Until this many tokens were generated, stop ids (EOS unless ignoreEos, stopTokenIds) cannot be sampled and stop strings do not end the output (vLLM min_tokens, SGLang min_new_tokens). */
  minTokens: number;
}

/**
 * An output constraint as the request gave it; `param` is the request field it came from, so
 * an invalid schema or grammar is reported against that field.
 */
export type GrammarSpec = { param: string } & (
  | { type: 'json_schema'; schema: string }
  | { type: 'json_object' }
  | { type: 'regex'; pattern: string }
  | { type: 'ebnf'; grammar: string }
  | { type: 'choice'; choices: string[] }
  /**
   * Tool calls in Llama 3.1's JSON format ({"name": ..., "parameters": ...}, "; " between calls),
   * each call's parameters following its function's schema (JSON text): tool_choice required or named.
   */
  | { type: 'tool_calls'; tools: { name: string; schema: string }[]; parallel: boolean }
  /** An xgrammar structural tag ({"type": "structural_tag", "format": ...}) as JSON text. */
  | { type: 'structural_tag'; tag: string }
);

export interface GenerateRequest {
  /** Unique; generated when absent. Used by abort(). */
  id?: string;
  promptTokenIds: number[];
  params: Partial<SamplingParams>;
}

export interface TokenLogprob {
  tokenId: number;
  logprob: number;
  /** Alternatives, best first, when top log-probs were asked. */
  top: { tokenId: number; logprob: number }[];
}

export interface PromptTokenLogprob extends TokenLogprob {
  /** 1 + how many tokens were more likely; 0 where no log-prob was computed. */
  rank: number;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose KV came from the prefix cache. */
  cachedTokens: number;
}

/** One step's news for one sample (choice) of a request. */
export interface GenerateDelta {
  requestId: string;
  /** The sample's index, 0 .. n-1. */
  index: number;
  /** Text that became final this step (may be "" while a possible stop string is held back). */
  text: string;
  /** Token ids generated this step (usually one). */
  tokenIds: number[];
  logprobs: TokenLogprob[] | null;
  /**
   * On the first delta of each sample when promptLogprobs was asked: one entry per prompt token
   * (logprob NaN where none was computed: the first token, and those before promptLogprobsStart).
   */
  promptLogprobs?: PromptTokenLogprob[] | null;
  /** Set on the sample's last delta. */
  finishReason: FinishReason | null;
  /** The stop string or token id that ended it, when finishReason is "stop". */
  matchedStop: string | number | null;
  /** On the sample's last delta: tokens of this sample. */
  usage: Usage | null;
  /** On the sample's last delta: when its request reached each stage (for latency metrics). */
  timing?: RequestTiming;
}

/** Milliseconds since the epoch (performance.timeOrigin + performance.now()), so they survive a thread hop. */
export interface RequestTiming {
  /** The engine accepted the request. */
  arrival: number;
  /** The request was first part of a step (null: never scheduled). */
  scheduled: number | null;
  /** The request's first token was sampled (null: none was). */
  firstToken: number | null;
}

export interface EngineStats {
  runningRequests: number;
  waitingRequests: number;
  kvPagesTotal: number;
  /** Pages held by running requests (what vllm:kv_cache_usage_perc reports). */
  kvPagesUsed: number;
  /** Pages only the prefix cache holds: evictable, so not counted as used. */
  kvPagesCached: number;
  kvPagesFree: number;
  pageSize: number;
  /** Tokens held by the prefix cache that no running request uses (evictable). */
  prefixCacheTokens: number;
  /** Prompt tokens served from the prefix cache since start. */
  prefixCacheHitTokens: number;
  /** Prompt tokens looked up in the prefix cache since start (at first admission). */
  prefixCacheQueryTokens: number;
  /** Prompt tokens seen since start (for the hit rate). */
  promptTokensTotal: number;
  generatedTokensTotal: number;
  /** Requests retracted to the queue for lack of KV since start. */
  retractions: number;
  /** Time of the last completed step (ms since epoch), for wedge detection. */
  lastStepAt: number;
  /** Steps completed since start: any increase means the engine makes progress. */
  stepsTotal: number;
  /** Set when the backend failed: the engine accepts nothing more. */
  error: string | null;
}

/** The engine's resolved sizes and policies (what SGLang's /server_info reports as server args). */
export interface EngineSettings {
  pageSize: number;
  /** KV pool size in tokens. */
  maxTotalTokens: number;
  maxRunningRequests: number;
  maxPrefillTokens: number;
  chunkedPrefillSize: number;
  maxQueuedRequests: number;
  schedulePolicy: 'lpm' | 'fcfs';
  disableRadixCache: boolean;
}

export interface Engine {
  /** Queues a request; the stream yields deltas of every sample and ends when all have finished. */
  generate(request: GenerateRequest): AsyncIterable<GenerateDelta>;
  /** Queues all of the requests or none of them (one stream each, in order); throws as generate() does. */
  generateMany(requests: GenerateRequest[]): AsyncIterable<GenerateDelta>[];
  /** Aborts a request at any stage (queued, prefilling, decoding); frees its KV at once. */
  abort(requestId: string): void;
  stats(): EngineStats;
  /** Drops every evictable prefix-cache entry. Returns false when requests are running or waiting. (A promise when the engine runs in another thread.) */
  flushCache(): boolean | Promise<boolean>;
  /** Stops accepting requests and resolves when in-flight ones have finished. */
  drain(): Promise<void>;
  close(): Promise<void>;
}
