import type { GenerateDelta } from '../../engine/types.js';
import type { Accumulator, Fold } from './accumulator.js';
import { ToolCallStream } from '../tool-calls/tool-call-stream.js';
import type { ChatCompletionChoice, ChatCompletionChunk, ChatCompletionChunkChoice, ChatCompletionResponse } from './chat.js';
import { chatLogprobs } from './logprobs.js';
import type { TokenText } from './token-text.js';
import { UsageTally } from './usage.js';
import { FrameTemplates } from './frame-templates.js';

export interface ChatSetup {
  id: string;
  created: number;
  model: string;
  promptTokens: number;
  /** Choices (samples of the one prompt). */
  n: number;
  /** Log-probs were asked for. */
  logprobs: boolean;
  /** Chunks carry `usage: null` and a last usage chunk follows (stream_options.include_usage). */
  includeUsage: boolean;
  tokenText: TokenText;
  /** Read tool calls out of the output (tools given, tool_choice not "none"); `forced`: required or named. */
  toolCalls?: { forced: boolean; newCallId: () => string } | null;
}

/**
 * /v1/chat/completions: a role chunk per choice, then one `chat.completion.chunk` per delta; the
 * `chat.completion` response folds their deltas into messages.
 */
export class ChatAccumulator implements Accumulator<ChatCompletionChunk, ChatCompletionResponse> {
  readonly usage: UsageTally;
  private readonly toolStreams: ToolCallStream[] | null;
  private readonly frames: FrameTemplates;

  constructor(private readonly setup: ChatSetup) {
    this.usage = new UsageTally([setup.promptTokens]);
    const tools = setup.toolCalls;
    this.toolStreams = tools ? Array.from({ length: setup.n }, () => new ToolCallStream(tools.newCallId)) : null;
    const head = JSON.stringify(this.head()).slice(0, -1);
    this.frames = new FrameTemplates(
      (index) => `${head},"choices":[{"index":${index},"delta":{"content":`,
      `},"logprobs":null,"finish_reason":null}]${setup.includeUsage ? ',"usage":null' : ''}}`,
    );
  }

  frame(prompt: number, delta: GenerateDelta): string {
    // Tool calls rewrite the delta; log-probs and the last chunk (matched_stop) carry more fields.
    if (this.toolStreams || delta.logprobs || delta.finishReason !== null) return JSON.stringify(this.chunk(prompt, delta));
    this.usage.add(0, delta);
    return this.frames.text(delta.index, delta.text);
  }

  opening(): ChatCompletionChunk[] {
    // A choice that must call tools has no content (null, as OpenAI streams it).
    const content = this.setup.toolCalls?.forced ? null : '';
    return Array.from({ length: this.setup.n }, (_, index) => this.wrap([{ index, delta: { role: 'assistant', content }, logprobs: null, finish_reason: null }]));
  }

  chunk(_prompt: number, delta: GenerateDelta): ChatCompletionChunk {
    this.usage.add(0, delta);
    const choice: ChatCompletionChunkChoice = {
      index: delta.index,
      delta: { content: delta.text },
      logprobs: delta.logprobs ? { content: chatLogprobs(delta.logprobs, this.setup.tokenText) } : null,
      finish_reason: delta.finishReason,
    };
    const tools = this.toolStreams?.[delta.index];
    if (tools) {
      const piece = tools.push(delta.text, delta.finishReason !== null);
      choice.delta = piece.toolCalls.length > 0 ? { tool_calls: piece.toolCalls } : piece.content !== '' ? { content: piece.content } : {};
      if (delta.finishReason === 'stop' && tools.calledTools) choice.finish_reason = 'tool_calls';
    }
    if (delta.finishReason !== null) choice.matched_stop = delta.matchedStop;
    return this.wrap([choice]);
  }

  closing(): ChatCompletionChunk[] {
    return this.setup.includeUsage ? [{ ...this.head(), choices: [], usage: this.usage.info() }] : [];
  }

  fold(): Fold<ChatCompletionChunk, ChatCompletionResponse> {
    const choices: ChatCompletionChoice[] = Array.from({ length: this.setup.n }, (_, index) => ({
      index,
      message: { role: 'assistant', content: '' },
      logprobs: this.setup.logprobs ? { content: [] } : null,
      finish_reason: null,
    }));
    const response: ChatCompletionResponse = { ...this.head(), object: 'chat.completion', choices, usage: this.usage.info() };
    return {
      add(chunk) {
        for (const part of chunk.choices) {
          const choice = choices[part.index]!;
          if (part.delta.role) choice.message.role = part.delta.role;
          if (part.delta.content) choice.message.content = (choice.message.content ?? '') + part.delta.content;
          for (const piece of part.delta.tool_calls ?? []) {
            const calls = (choice.message.tool_calls ??= []);
            if (piece.id !== undefined) calls[piece.index] = { id: piece.id, type: 'function', function: { name: piece.function.name!, arguments: '' } };
            calls[piece.index]!.function.arguments += piece.function.arguments;
          }
          if (choice.logprobs && part.logprobs) choice.logprobs.content.push(...part.logprobs.content);
          if (part.finish_reason !== null) {
            choice.finish_reason = part.finish_reason;
            choice.matched_stop = part.matched_stop;
          }
        }
        if (chunk.usage) response.usage = chunk.usage;
      },
      result: () => {
        for (const choice of choices) if (choice.message.tool_calls && choice.message.content === '') choice.message.content = null;
        return response;
      },
    };
  }

  private wrap(choices: ChatCompletionChunkChoice[]): ChatCompletionChunk {
    return this.setup.includeUsage ? { ...this.head(), choices, usage: null } : { ...this.head(), choices };
  }

  private head() {
    return { id: this.setup.id, object: 'chat.completion.chunk' as const, created: this.setup.created, model: this.setup.model };
  }
}
