/** How the engine sizes its KV pool and schedules; the defaults are SGLang v0.3's. */
export interface EngineOptions {
  /** Token slots per KV page (1 allowed, as SGLang's default). */
  pageSize: number;
  /**
   * KV pool size in tokens. null: on a GPU backend, what --mem-fraction-static leaves after the
   * weights; on a host backend (ref, cpu), min(1 GiB, 1/16 of system memory) worth of KV.
   */
  maxTotalTokens: number | null;
  /** Fraction of device memory for weights and KV (GPU backends). */
  memFractionStatic: number;
  /** Most prompt tokens one request prefills in one step (a longer prompt is split in chunks). */
  chunkedPrefillSize: number;
  /** Most prefill tokens in one step, all requests together (decode tokens count against it). */
  maxPrefillTokens: number;
  /** Most sequences running at once; null: min(pool tokens / 2, 4096). */
  maxRunningRequests: number | null;
  /** lpm: longest cached prefix first (needs the radix cache); fcfs: arrival order. */
  schedulePolicy: 'lpm' | 'fcfs';
  disableRadixCache: boolean;
  /** null: the model's max_position_embeddings. Clipped to the KV pool size. */
  contextLength: number | null;
  /** Waiting requests at most; beyond it generate() throws EngineOverloadedError. */
  maxQueuedRequests: number;
}

export const defaultEngineOptions: EngineOptions = {
  pageSize: 1,
  maxTotalTokens: null,
  memFractionStatic: 0.88,
  chunkedPrefillSize: 8192,
  maxPrefillTokens: 16384,
  maxRunningRequests: null,
  schedulePolicy: 'lpm',
  disableRadixCache: false,
  contextLength: null,
  maxQueuedRequests: 10000,
};
