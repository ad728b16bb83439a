import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { defaultMaxTokens, defaultSamplingParams } from '../../engine/request-parameters.js';
import type { ServerContext } from '../context.js';
import { invalidParam } from '../http/errors.js';
import { ChatAccumulator } from '../protocol/chat-accumulator.js';
import { ChatCompletionRequest } from '../protocol/chat.js';
import { bestOfRequested, withBestOf } from '../protocol/best-of.js';
import { toSamplingParams } from '../protocol/sampling.js';
import { openAiGrammar } from '../protocol/structured-output.js';
import { toolUse, type Tool } from '../protocol/tools.js';
import { templateMessages } from '../tool-calls/tool-prompt.js';
import { checkModel, encodePrompt, newId, unixSeconds } from './common.js';
import { replyWithGeneration } from './respond.js';

export function registerChat(app: FastifyInstance, ctx: ServerContext): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/v1/chat/completions', { schema: { body: ChatCompletionRequest } }, (request, reply) =>
    chatCompletions(ctx, request, reply),
  );
}

async function chatCompletions(ctx: ServerContext, request: FastifyRequest<{ Body: ChatCompletionRequest }>, reply: FastifyReply) {
  const body = request.body;
  checkModel(ctx, body.model);
  if ((body as Record<string, unknown>).prompt_logprobs != null) throw invalidParam('prompt_logprobs', 'prompt_logprobs is supported on /v1/completions only.');
  for (const field of ['functions', 'function_call'] as const) {
    if (body[field] != null) throw invalidParam(field, `${field} (deprecated by OpenAI) is not supported; use tools.`);
  }
  const tools = toolUse(body.tools, body.tool_choice, body.parallel_tool_calls);
  const outputConstraint = openAiGrammar(body);
  if (tools?.grammar && outputConstraint) {
    throw invalidParam(outputConstraint.param, `${outputConstraint.param} cannot be combined with tool_choice "required" or a named function (the tool calls are the output).`);
  }
  const grammar = tools?.grammar ?? outputConstraint;
  if (body.top_logprobs != null && body.top_logprobs > 0 && !body.logprobs) {
    throw invalidParam('top_logprobs', 'top_logprobs needs logprobs set to true.');
  }
  const promptTokenIds = await renderPrompt(ctx, body.messages, body.add_generation_prompt ?? true, tools?.tools ?? null);
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? defaultMaxTokens.chat(ctx.contextLength, promptTokenIds.length, ctx.model.samplingDefaults?.maxNewTokens);
  const logprobs = body.logprobs ? (body.top_logprobs ?? 0) : null;
  const bestOf = bestOfRequested(body, logprobs);
  const params = { ...toSamplingParams(body, maxTokens, logprobs), grammar };
  const id = newId('chatcmpl');
  const created = unixSeconds();
  await replyWithGeneration(ctx, reply, {
    route: 'chat',
    id,
    requests: [{ id, promptTokenIds, params: withBestOf(params, bestOf), promptParam: 'messages' }],
    stream: body.stream === true,
    bestOf,
    accumulator: () =>
      new ChatAccumulator({
        id,
        created,
        model: ctx.servedModelName,
        promptTokens: promptTokenIds.length,
        n: params.n ?? defaultSamplingParams.n,
        logprobs: body.logprobs === true,
        includeUsage: !body.stream || body.stream_options?.include_usage === true,
        tokenText: ctx.tokenText,
        toolCalls: tools && tools.choice !== 'none' ? { forced: tools.grammar !== null, newCallId: () => `call_${randomUUID().replaceAll('-', '').slice(0, 24)}` } : null,
      }),
  });
}

export async function renderPrompt(ctx: ServerContext, messages: ChatCompletionRequest['messages'], addGenerationPrompt: boolean, tools: Tool[] | null = null): Promise<number[]> {
  const tokenizer = ctx.model.tokenizer;
  if (!tokenizer.hasChatTemplate) throw invalidParam('messages', 'This model has no chat template; use /v1/completions.');
  // Templates written before OpenAI's "developer" role do not know it: it is the system prompt.
  const plain = messages.map((m, i) => ({ role: m.role === 'developer' ? 'system' : m.role, content: messageText(m.content, i), tool_calls: m.tool_calls, tool_call_id: m.tool_call_id }));
  const rendered = templateMessages(plain, tools, tokenizer.templateRendersTools);
  let text: string;
  try {
    text = tokenizer.applyChatTemplate(rendered.messages, addGenerationPrompt, rendered.extra);
  } catch (e) {
    throw invalidParam('messages', `The chat template could not render these messages: ${(e as Error).message}`);
  }
  return encodePrompt(ctx, text, 'messages', false);
}

function messageText(content: ChatCompletionRequest['messages'][number]['content'], i: number): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content
    .map((part, j) => {
      if (part.type !== 'text' || typeof part.text !== 'string') {
        throw invalidParam(`messages[${i}].content[${j}]`, `Content parts of type ${JSON.stringify(part.type)} are not supported (only "text").`);
      }
      return part.text;
    })
    .join('\n'); // as vLLM joins text parts
}
