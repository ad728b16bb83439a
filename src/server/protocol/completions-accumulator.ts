import type { GenerateDelta } from '../../engine/types.js';
import type { Accumulator, Fold } from './accumulator.js';
import type { CompletionChoice, CompletionLogprobs, CompletionResponse } from './completions.js';
import { appendCompletionLogprobs, appendPromptLogprobs, emptyCompletionLogprobs, vllmPromptLogprobs } from './logprobs.js';
import type { TextOffsets, TokenText } from './token-text.js';
import { UsageTally } from './usage.js';
import { FrameTemplates } from './frame-templates.js';

export interface CompletionSetup {
  id: string;
  created: number;
  model: string;
  /** Prompt token counts, one per prompt. */
  promptLengths: number[];
  /** Samples per prompt; choice index = prompt * n + sample. */
  n: number;
  /** Each prompt's text, put before its choices' text (echo: true), or null. */
  echo: string[] | null;
  /** Log-probs were asked for. */
  logprobs: boolean;
  /** echo with logprobs: the listing starts with the prompt's tokens (the first with null log-probs). */
  echoLogprobs?: boolean;
  /** vLLM's prompt_logprobs: each choice carries prompt_logprobs. */
  vllmPromptLogprobs?: boolean;
  /** The prompt came as text (its offsets skip special tokens such as BOS, which the text does not hold). */
  promptIsText?: boolean;
  /** As the request asked (default true): log-prob text offsets decode the way the engine did. */
  skipSpecialTokens?: boolean;
  /** Chunks carry `usage: null` and a last usage chunk follows (stream_options.include_usage). */
  includeUsage: boolean;
  tokenText: TokenText;
}

/** /v1/completions: one `text_completion` chunk per delta; the response folds them by choice index. */
export class CompletionAccumulator implements Accumulator<CompletionResponse, CompletionResponse> {
  readonly usage: UsageTally;
  /** Per choice: whether its first chunk (which carries the echo) went out. */
  private readonly started: boolean[];
  /** Per choice, when log-probs are asked: where each token's text starts in the completion. */
  private readonly offsets: (TextOffsets | null)[];
  private readonly frames: FrameTemplates;

  constructor(private readonly setup: CompletionSetup) {
    this.usage = new UsageTally(setup.promptLengths);
    this.started = new Array(setup.promptLengths.length * setup.n).fill(false);
    this.offsets = new Array(setup.promptLengths.length * setup.n).fill(null);
    const head = JSON.stringify(this.head()).slice(0, -1);
    this.frames = new FrameTemplates(
      (index) => `${head},"choices":[{"index":${index},"text":`,
      `,"logprobs":null,"finish_reason":null}]${setup.includeUsage ? ',"usage":null' : ''}}`,
    );
  }

  frame(prompt: number, delta: GenerateDelta): string {
    const index = prompt * this.setup.n + delta.index;
    // The first chunk of a choice may carry the echo and prompt log-probs; the last one matched_stop.
    if (!this.started[index] || delta.logprobs || delta.finishReason !== null) return JSON.stringify(this.chunk(prompt, delta));
    this.usage.add(prompt, delta);
    return this.frames.text(index, delta.text);
  }

  opening(): CompletionResponse[] {
    return [];
  }

  chunk(prompt: number, delta: GenerateDelta): CompletionResponse {
    this.usage.add(prompt, delta);
    const index = prompt * this.setup.n + delta.index;
    const echo = this.setup.echo?.[prompt] ?? '';
    let text = delta.text;
    const first = !this.started[index];
    if (first) {
      text = echo + text;
      this.started[index] = true;
    }
    let logprobs: CompletionLogprobs | null = null;
    const promptEntries = first ? (delta.promptLogprobs ?? null) : null;
    if (delta.logprobs || (promptEntries && this.setup.echoLogprobs)) {
      logprobs = emptyCompletionLogprobs();
      if (promptEntries && this.setup.echoLogprobs) appendPromptLogprobs(logprobs, promptEntries, this.setup.tokenText, !this.setup.promptIsText);
    }
    if (delta.logprobs) {
      logprobs ??= emptyCompletionLogprobs();
      const offsets = (this.offsets[index] ??= this.setup.tokenText.offsets(this.setup.skipSpecialTokens ?? true));
      appendCompletionLogprobs(logprobs, delta.logprobs, this.setup.tokenText, (id) => echo.length + offsets.next(id));
    }
    const choice: CompletionChoice = { index, text, logprobs, finish_reason: delta.finishReason };
    if (promptEntries && this.setup.vllmPromptLogprobs) choice.prompt_logprobs = vllmPromptLogprobs(promptEntries, this.setup.tokenText);
    if (delta.finishReason !== null) choice.matched_stop = delta.matchedStop;
    return this.setup.includeUsage ? { ...this.head(), choices: [choice], usage: null } : { ...this.head(), choices: [choice] };
  }

  closing(): CompletionResponse[] {
    return this.setup.includeUsage ? [{ ...this.head(), choices: [], usage: this.usage.info() }] : [];
  }

  fold(): Fold<CompletionResponse, CompletionResponse> {
    const choices: CompletionChoice[] = Array.from({ length: this.setup.promptLengths.length * this.setup.n }, (_, index) => ({
      index,
      text: '',
      logprobs: this.setup.logprobs ? emptyCompletionLogprobs() : null,
      finish_reason: null,
    }));
    const response: CompletionResponse = { ...this.head(), choices, usage: null };
    return {
      add(chunk) {
        for (const part of chunk.choices) {
          const choice = choices[part.index]!;
          choice.text += part.text;
          if (choice.logprobs && part.logprobs) {
            choice.logprobs.tokens.push(...part.logprobs.tokens);
            choice.logprobs.token_logprobs.push(...part.logprobs.token_logprobs);
            choice.logprobs.top_logprobs!.push(...(part.logprobs.top_logprobs ?? []));
            choice.logprobs.text_offset.push(...part.logprobs.text_offset);
          }
          if (part.prompt_logprobs) choice.prompt_logprobs = part.prompt_logprobs;
          if (part.finish_reason !== null) {
            choice.finish_reason = part.finish_reason;
            choice.matched_stop = part.matched_stop;
          }
        }
        if (chunk.usage) response.usage = chunk.usage;
      },
      result: () => response,
    };
  }

  private head() {
    return { id: this.setup.id, object: 'text_completion' as const, created: this.setup.created, model: this.setup.model };
  }
}
