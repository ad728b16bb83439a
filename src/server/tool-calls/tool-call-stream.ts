import type { ToolCallDelta } from '../protocol/chat.js';
import { scanToolCalls } from './tool-call-parser.js';

/** What one delta of a choice carries once tool calls are read out of its text. */
export interface ToolCallPiece {
  /** Text to send as content ("" for none). */
  content: string;
  toolCalls: ToolCallDelta[];
}

/**
 * One choice's text read as tool calls while it streams: text that cannot be a call goes out as
 * content; text that may still become one is held back until it can tell (or the choice ends);
 * calls go out the way OpenAI streams them: id, type and name in the call's first piece, then
 * fragments of its arguments, each under the call's index.
 */
export class ToolCallStream {
  private text = '';
  private kind: 'open' | 'calls' | 'text' = 'open';
  private readonly sentArguments: number[] = [];

  constructor(private readonly newCallId: () => string) {}

  /** The choice called tools (its finish reason becomes "tool_calls"). */
  get calledTools(): boolean {
    return this.kind === 'calls';
  }

  push(text: string, last: boolean): ToolCallPiece {
    if (this.kind === 'text') return { content: text, toolCalls: [] };
    this.text += text;
    const scan = scanToolCalls(this.text);
    if (scan.kind === 'text' || (scan.kind === 'open' && last)) {
      this.kind = 'text';
      return { content: this.text, toolCalls: [] };
    }
    if (scan.kind === 'open') return { content: '', toolCalls: [] };
    this.kind = 'calls';
    const toolCalls: ToolCallDelta[] = [];
    scan.calls.forEach((call, index) => {
      const sent = this.sentArguments[index];
      const fragment = call.arguments.slice(sent ?? 0);
      if (sent === undefined) {
        toolCalls.push({ index, id: this.newCallId(), type: 'function', function: { name: call.name, arguments: fragment } });
      } else if (fragment !== '') {
        toolCalls.push({ index, function: { arguments: fragment } });
      }
      this.sentArguments[index] = call.arguments.length;
    });
    return { content: '', toolCalls };
  }
}
