import { epochMs } from '../../engine/sequence.js';
import type { FinishReason, GenerateDelta, RequestTiming } from '../../engine/types.js';
import type { FinishedRequest, ServerMetrics } from './metrics.js';

/** What one engine request (one prompt) has done so far. */
class PromptProgress {
  firstTokenAt: number | null = null;
  generationTokens = 0;
  timing: RequestTiming | null = null;
  ended = false;
  readonly reasons: FinishReason[] = [];
  /** Per sample: when its first and latest tokens came. */
  readonly samples = new Map<number, { first: number; last: number; tokens: number }>();

  constructor(readonly promptTokens: number) {}
}

/**
 * Request-level metrics for the engine requests behind one HTTP request: time to first token
 * and inter-token gaps as tokens arrive, and, once per engine request (not per sample), its
 * finish reason, phase times and token counts when its stream ends.
 */
export class RequestMetricsRecorder {
  private readonly arrival = epochMs();
  private readonly prompts: PromptProgress[];

  constructor(
    private readonly metrics: ServerMetrics,
    promptLengths: readonly number[],
  ) {
    this.prompts = promptLengths.map((n) => new PromptProgress(n));
  }

  onDelta(prompt: number, delta: GenerateDelta): void {
    const progress = this.prompts[prompt]!;
    const count = delta.tokenIds.length;
    if (count > 0) {
      const now = epochMs();
      if (progress.firstTokenAt === null) {
        progress.firstTokenAt = now;
        this.metrics.observeFirstToken((now - this.arrival) / 1000);
      }
      const sample = progress.samples.get(delta.index);
      if (sample) {
        this.metrics.observeInterToken((now - sample.last) / 1000);
        sample.last = now;
        sample.tokens += count;
      } else {
        progress.samples.set(delta.index, { first: now, last: now, tokens: count });
      }
      progress.generationTokens += count;
    }
    if (delta.finishReason !== null) {
      progress.reasons.push(delta.finishReason);
      if (delta.timing) progress.timing = delta.timing;
    }
  }

  /** The engine request's stream ended: every sample has finished (or was aborted). */
  onPromptEnd(prompt: number): void {
    const progress = this.prompts[prompt]!;
    if (progress.ended) return;
    progress.ended = true;
    this.metrics.recordFinished(this.finished(progress, epochMs()));
  }

  /** The HTTP request is over: engine requests whose streams did not end count as aborted. */
  onDispose(): void {
    for (const progress of this.prompts) {
      if (progress.ended) continue;
      progress.ended = true;
      progress.reasons.push('abort');
      this.metrics.recordFinished(this.finished(progress, epochMs()));
    }
  }

  private finished(p: PromptProgress, now: number): FinishedRequest {
    const reasons = p.reasons;
    const finishReason = reasons.includes('abort') || reasons.length === 0 ? 'abort' : reasons.includes('length') ? 'length' : 'stop';
    const scheduled = p.timing?.scheduled ?? null;
    const firstToken = p.timing?.firstToken ?? null;
    const seconds = (from: number | null, to: number | null) => (from === null || to === null ? null : Math.max(0, to - from) / 1000);
    const timePerOutputToken: number[] = [];
    for (const sample of p.samples.values()) {
      if (sample.tokens > 1) timePerOutputToken.push((sample.last - sample.first) / 1000 / (sample.tokens - 1));
    }
    return {
      finishReason,
      promptTokens: p.promptTokens,
      generationTokens: p.generationTokens,
      e2eSeconds: (now - this.arrival) / 1000,
      queueSeconds: seconds(p.timing?.arrival ?? null, scheduled),
      prefillSeconds: seconds(scheduled, firstToken),
      decodeSeconds: seconds(firstToken, firstToken === null ? null : now),
      inferenceSeconds: seconds(scheduled, scheduled === null ? null : now),
      timePerOutputToken,
    };
  }
}
