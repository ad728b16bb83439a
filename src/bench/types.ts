/** One request of a benchmark run: the prompt text and its token counts as the dataset measured them. */
export interface BenchRequest {
  prompt: string;
  promptLen: number;
  /** The max_tokens sent (the completion's token count for ShareGPT). */
  outputLen: number;
}

/** What the client observed for one request. Times are in milliseconds. */
export interface RequestResult {
  success: boolean;
  generatedText: string;
  promptLen: number;
  /** The requested output length (equal to the real count with ignore_eos), as bench_serving v0.3.0 counts it. */
  outputLen: number;
  /** Time to the first chunk with non-empty text. */
  ttft: number;
  /** Gaps between successive chunks with non-empty text. */
  itl: number[];
  /** Time to the last chunk received. */
  latency: number;
  /** Empty on success; otherwise the full error text. */
  error: string;
  /** A short failure category for counting (e.g. "HTTP 500", "stalled", "connection dropped"). */
  failureReason?: string;
}

export function emptyResult(request: BenchRequest): RequestResult {
  return {
    success: false,
    generatedText: '',
    promptLen: request.promptLen,
    outputLen: request.outputLen,
    ttft: 0,
    itl: [],
    latency: 0,
    error: '',
  };
}
