import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { defaultMaxTokens, defaultSamplingParams } from '../../engine/request-parameters.js';
import type { ChatMessage as TemplateMessage } from '../../model/tokenizer.js';
import type { ServerContext } from '../context.js';
import { invalidParam } from '../http/errors.js';
import { ChatAccumulator } from '../protocol/chat-accumulator.js';
import { ChatCompletionRequest } from '../protocol/chat.js';
import { toSamplingParams } from '../protocol/sampling.js';
import { openAiGrammar } from '../protocol/structured-output.js';
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
  if (body.tools && body.tools.length > 0) throw invalidParam('tools', 'tools (function calling) are not supported.');
  for (const field of ['functions', 'function_call'] as const) {
    if (body[field] != null) throw invalidParam(field, `${field} (deprecated by OpenAI) is not supported; use tools.`);
  }
  if (body.tool_choice != null) throw invalidParam('tool_choice', 'tool_choice needs tools.');
  if (body.parallel_tool_calls != null) throw invalidParam('parallel_tool_calls', 'parallel_tool_calls needs tools.');
  const grammar = openAiGrammar(body);
  if (body.top_logprobs != null && body.top_logprobs > 0 && !body.logprobs) {
    throw invalidParam('top_logprobs', 'top_logprobs needs logprobs set to true.');
  }
  const promptTokenIds = await renderPrompt(ctx, body.messages, body.add_generation_prompt ?? true);
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? defaultMaxTokens.chat(ctx.contextLength, promptTokenIds.length);
  const params = { ...toSamplingParams(body, maxTokens, body.logprobs ? (body.top_logprobs ?? 0) : null), grammar };
  const id = newId('chatcmpl');
  const created = unixSeconds();
  await replyWithGeneration(ctx, reply, {
    route: 'chat',
    id,
    requests: [{ id, promptTokenIds, params, promptParam: 'messages' }],
    stream: body.stream === true,
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
      }),
  });
}

export async function renderPrompt(ctx: ServerContext, messages: ChatCompletionRequest['messages'], addGenerationPrompt: boolean): Promise<number[]> {
  const tokenizer = ctx.model.tokenizer;
  if (!tokenizer.hasChatTemplate) throw invalidParam('messages', 'This model has no chat template; use /v1/completions.');
  // Templates written before OpenAI's "developer" role do not know it: it is the system prompt.
  const plain: TemplateMessage[] = messages.map((m, i) => ({ role: m.role === 'developer' ? 'system' : m.role, content: messageText(m.content, i) }));
  let text: string;
  try {
    text = tokenizer.applyChatTemplate(plain, addGenerationPrompt);
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
