import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ChatMessage as TemplateMessage } from '../../model/tokenizer.js';
import type { ServerContext } from '../context.js';
import { invalidParam, toApiError } from '../errors.js';
import { GenerationGroup } from '../generation.js';
import {
  ChatCompletionRequest,
  type ChatCompletionChoice,
  type ChatCompletionChunk,
  type ChatCompletionChunkChoice,
  type ChatCompletionResponse,
} from '../protocol/chat.js';
import { chatLogprobs } from '../protocol/logprobs.js';
import { checkContext, checkModel, logRequest, newId, unixSeconds } from '../request-common.js';
import { toSamplingParams } from '../sampling.js';
import { streamEvents } from '../sse.js';
import { UsageTally } from '../usage-tally.js';

export function registerChat(app: FastifyInstance, ctx: ServerContext): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/v1/chat/completions', { schema: { body: ChatCompletionRequest } }, (request, reply) =>
    chatCompletions(ctx, request, reply),
  );
}

async function chatCompletions(ctx: ServerContext, request: FastifyRequest<{ Body: ChatCompletionRequest }>, reply: FastifyReply) {
  const body = request.body;
  checkModel(ctx, body.model);
  if (body.tools && body.tools.length > 0) throw invalidParam('tools', 'tools (function calling) are not supported.');
  if (body.response_format && body.response_format.type !== 'text') {
    throw invalidParam('response_format', `response_format type ${JSON.stringify(body.response_format.type)} is not supported (only "text").`);
  }
  if (body.top_logprobs != null && body.top_logprobs > 0 && !body.logprobs) {
    throw invalidParam('top_logprobs', 'top_logprobs needs logprobs set to true.');
  }
  const promptTokenIds = renderPrompt(ctx, body.messages, body.add_generation_prompt ?? true);
  // Documented default: everything the context has left after the prompt (as OpenAI and vLLM do).
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? Math.max(1, ctx.contextLength - promptTokenIds.length);
  checkContext(ctx, promptTokenIds.length, maxTokens, 'messages');
  const logprobs = body.logprobs ? (body.top_logprobs ?? 0) : null;
  const params = toSamplingParams(body, maxTokens, logprobs, ctx.model.config.vocabSize);
  const n = params.n ?? 1;
  const id = newId('chatcmpl');
  const created = unixSeconds();
  const group = new GenerationGroup(ctx, [{ id, promptTokenIds, params }], reply.raw);
  const usage = new UsageTally([promptTokenIds.length]);
  try {
    await group.ready();
    const head = { id, object: 'chat.completion.chunk' as const, created, model: ctx.servedModelName };
    if (body.stream) {
      const includeUsage = body.stream_options?.include_usage === true;
      const chunk = (choices: ChatCompletionChunkChoice[]): ChatCompletionChunk =>
        includeUsage ? { ...head, choices, usage: null } : { ...head, choices };
      await streamEvents(
        reply,
        async (sse) => {
          for (let index = 0; index < n; index++) {
            await sse.send(chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
          }
          for await (const { delta } of group.deltas()) {
            usage.add(0, delta);
            const choice: ChatCompletionChunkChoice = {
              index: delta.index,
              delta: { content: delta.text },
              logprobs: delta.logprobs ? { content: chatLogprobs(delta.logprobs, ctx.tokenText) } : null,
              finish_reason: delta.finishReason,
            };
            if (delta.finishReason !== null) choice.matched_stop = delta.matchedStop;
            await sse.send(chunk([choice]));
            if (sse.closed) break;
          }
          if (includeUsage) await sse.send({ ...head, choices: [], usage: usage.info() });
        },
        (e) => toApiError(e).body(),
      );
    } else {
      const choices: ChatCompletionChoice[] = Array.from({ length: n }, (_, index) => ({
        index,
        message: { role: 'assistant', content: '' },
        logprobs: logprobs !== null ? { content: [] } : null,
        finish_reason: null,
      }));
      for await (const { delta } of group.deltas()) {
        usage.add(0, delta);
        const choice = choices[delta.index]!;
        choice.message.content += delta.text;
        if (choice.logprobs && delta.logprobs) choice.logprobs.content.push(...chatLogprobs(delta.logprobs, ctx.tokenText));
        if (delta.finishReason !== null) {
          choice.finish_reason = delta.finishReason;
          choice.matched_stop = delta.matchedStop;
        }
      }
      const response: ChatCompletionResponse = { ...head, object: 'chat.completion', choices, usage: usage.info() };
      if (group.clientGone) reply.hijack();
      else await reply.send(response);
    }
    logRequest(ctx, 'chat', id, usage.promptTokens, usage.completionTokens, group.elapsedMs(), group.clientGone ? 'client gone' : 'done');
  } finally {
    group.dispose();
  }
}

export function renderPrompt(ctx: ServerContext, messages: ChatCompletionRequest['messages'], addGenerationPrompt: boolean): number[] {
  const tokenizer = ctx.model.tokenizer;
  if (!tokenizer.hasChatTemplate) throw invalidParam('messages', 'This model has no chat template; use /v1/completions.');
  const plain: TemplateMessage[] = messages.map((m, i) => ({ role: m.role, content: messageText(m.content, i) }));
  let text: string;
  try {
    text = tokenizer.applyChatTemplate(plain, addGenerationPrompt);
  } catch (e) {
    throw invalidParam('messages', `The chat template could not render these messages: ${(e as Error).message}`);
  }
  return tokenizer.encode(text, false);
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
    .join('');
}
