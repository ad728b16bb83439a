import type { ChatMessage as TemplateMessage } from '../../model/tokenizer.js';
import type { Tool, ToolCall } from '../protocol/tools.js';

/**
 * Chat messages with tools as the template will see them, in Llama 3.1's JSON tool format. A
 * template that renders `tools` itself (Llama 3.1's) gets the tools, the assistant tool calls
 * (arguments parsed) and the tool results as they are. A template that does not (Llama 3's) gets
 * plain messages written the way Llama 3.1's template writes them: the function definitions and
 * the call format in the first user message, each earlier call as the JSON the model would
 * have written, and each result as an "ipython" message.
 */
export interface ToolMessage {
  role: string;
  content: string;
  tool_calls?: ToolCall[] | null;
  tool_call_id?: string | null;
}

export function templateMessages(messages: ToolMessage[], tools: Tool[] | null, templateRendersTools: boolean): { messages: TemplateMessage[]; extra: Record<string, unknown> } {
  if (templateRendersTools) {
    return {
      messages: messages.map((m) => ({
        role: m.role,
        content: m.content,
        ...(m.tool_calls ? { tool_calls: m.tool_calls.map((c) => ({ ...c, function: { name: c.function.name, arguments: parseArguments(c.function.arguments) } })) } : {}),
        ...(m.tool_call_id ? { tool_call_id: m.tool_call_id } : {}),
      })),
      extra: tools ? { tools, tools_in_user_message: true } : {},
    };
  }
  const plain: TemplateMessage[] = messages.map((m) => {
    if (m.role === 'tool') return { role: 'ipython', content: m.content };
    if (m.role === 'assistant' && m.tool_calls && m.tool_calls.length > 0) {
      const calls = m.tool_calls.map((c) => `{"name": ${JSON.stringify(c.function.name)}, "parameters": ${JSON.stringify(parseArguments(c.function.arguments))}}`);
      return { role: 'assistant', content: calls.join('; ') };
    }
    return { role: m.role, content: m.content };
  });
  if (tools && tools.length > 0) {
    const first = plain.findIndex((m) => m.role === 'user');
    const preamble = toolPreamble(tools);
    if (first < 0) plain.push({ role: 'user', content: preamble });
    else plain[first] = { ...plain[first]!, content: `${preamble}\n\n${plain[first]!.content}` };
  }
  return { messages: plain, extra: {} };
}

/** The instructions and function definitions Llama 3.1 reads before the user's question. */
function toolPreamble(tools: Tool[]): string {
  const definitions = tools.map((t) => JSON.stringify({ type: 'function', function: t.function }, null, 4)).join('\n\n');
  return (
    'Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n' +
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.\n\n' +
    definitions
  );
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
