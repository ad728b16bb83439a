import { EngineOverloadedError, InvalidRequestError } from './errors.js';
import type { EngineOptions } from './options.js';
import type { Request, Sequence } from './sequence.js';
import type { GenerateRequest, SamplingParams } from './types.js';

export interface QueuedLoad {
  sequences: number;
  tokens: number;
}

/**
 * Sequences and prompt tokens waiting (held n > 1 samples included) stay under the queue bounds:
 * a request that could never fit is invalid (400), one that does not fit now is overload (503).
 */
export function checkQueueRoom(
  requests: GenerateRequest[],
  resolved: SamplingParams[],
  queued: () => QueuedLoad,
  { maxQueuedRequests, maxQueuedTokens }: Pick<EngineOptions, 'maxQueuedRequests' | 'maxQueuedTokens'>,
): void {
  let sequences = 0;
  let tokens = 0;
  resolved.forEach((params, i) => {
    if (params.maxNewTokens === 0 && params.promptLogprobs === null) return;
    sequences += params.n;
    tokens += params.n * requests[i]!.promptTokenIds.length;
  });
  if (sequences === 0) return;
  if (sequences > maxQueuedRequests) {
    throw new InvalidRequestError(`this request needs ${sequences} sequences (prompts x n) but the queue holds ${maxQueuedRequests} at most (--max-queued-requests)`, 'n');
  }
  if (tokens > maxQueuedTokens) {
    throw new InvalidRequestError(`this request queues ${tokens} prompt tokens (prompts x n) but the queue holds ${maxQueuedTokens} at most (--max-queued-tokens)`, 'prompt');
  }
  const load = queued();
  if (load.sequences + sequences > maxQueuedRequests) {
    throw new EngineOverloadedError(`too many requests waiting (${load.sequences} sequences); try again later`);
  }
  if (load.tokens + tokens > maxQueuedTokens) {
    throw new EngineOverloadedError(`too many prompt tokens waiting (${load.tokens}); try again later`);
  }
}

/** Sequences waiting to run, with the samples held until their prompt is computed, and their tokens. */
export function queuedLoad(waiting: readonly Sequence[], requests: Iterable<Request>): QueuedLoad {
  let sequences = waiting.length;
  let tokens = 0;
  for (const seq of waiting) tokens += seq.tokenIds.length;
  for (const req of requests) {
    if (req.samplesStarted) continue;
    sequences += req.params.n - 1;
    tokens += (req.params.n - 1) * req.promptIds.length;
  }
  return { sequences, tokens };
}
