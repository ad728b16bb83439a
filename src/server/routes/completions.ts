import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ServerContext } from '../context.js';
import { invalidParam, toApiError } from '../errors.js';
import { GenerationGroup } from '../generation.js';
import { CompletionRequest, type CompletionChoice, type CompletionResponse } from '../protocol/completions.js';
import { appendCompletionLogprobs, emptyCompletionLogprobs } from '../protocol/logprobs.js';
import { checkContext, checkModel, checkTokenIds, logRequest, newId, unixSeconds } from '../request-common.js';
import { defaultCompletionMaxTokens, toSamplingParams } from '../sampling.js';
import { streamEvents } from '../sse.js';
import { UsageTally } from '../usage-tally.js';

export function registerCompletions(app: FastifyInstance, ctx: ServerContext): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/v1/completions', { schema: { body: CompletionRequest } }, (request, reply) =>
    completions(ctx, request, reply),
  );
}

async function completions(ctx: ServerContext, request: FastifyRequest<{ Body: CompletionRequest }>, reply: FastifyReply) {
  const body = request.body;
  checkModel(ctx, body.model);
  if (body.suffix) throw invalidParam('suffix', 'suffix is not supported.');
  if (body.echo && body.logprobs != null) throw invalidParam('echo', 'echo together with logprobs is not supported.');
  const prompts = tokenizePrompts(ctx, body.prompt);
  const maxTokens = body.max_tokens ?? defaultCompletionMaxTokens;
  for (const prompt of prompts) checkContext(ctx, prompt.length, maxTokens, 'prompt');
  const params = toSamplingParams(body, maxTokens, body.logprobs ?? null, ctx.model.config.vocabSize);
  const n = params.n ?? 1;
  const id = newId('cmpl');
  const created = unixSeconds();
  const group = new GenerationGroup(
    ctx,
    prompts.map((promptTokenIds, i) => ({ id: prompts.length === 1 ? id : `${id}-${i}`, promptTokenIds, params })),
    reply.raw,
  );
  try {
    await group.ready();
    const echo = body.echo ? echoTexts(ctx, body.prompt, prompts) : null;
    const head = { id, object: 'text_completion' as const, created, model: ctx.servedModelName };
    const usage = new UsageTally(prompts.map((p) => p.length));
    if (body.stream) {
      const includeUsage = body.stream_options?.include_usage === true;
      const echoed = new Set<number>();
      const offsets = new Map<number, number>();
      await streamEvents(
        reply,
        async (sse) => {
          for await (const { prompt, delta } of group.deltas()) {
            usage.add(prompt, delta);
            const index = prompt * n + delta.index;
            let text = delta.text;
            if (echo && !echoed.has(index)) {
              echoed.add(index);
              text = echo[prompt] + text;
            }
            let logprobs = null;
            if (delta.logprobs) {
              logprobs = emptyCompletionLogprobs();
              offsets.set(index, appendCompletionLogprobs(logprobs, delta.logprobs, ctx.tokenText, offsets.get(index) ?? 0));
            }
            const choice: CompletionChoice = { index, text, logprobs, finish_reason: delta.finishReason };
            if (delta.finishReason !== null) choice.matched_stop = delta.matchedStop;
            await sse.send(includeUsage ? { ...head, choices: [choice], usage: null } : { ...head, choices: [choice] });
            if (sse.closed) break;
          }
          if (includeUsage) await sse.send({ ...head, choices: [], usage: usage.info() });
        },
        (e) => toApiError(e).body(),
      );
    } else {
      const choices: CompletionChoice[] = Array.from({ length: prompts.length * n }, (_, index) => ({
        index,
        text: echo ? echo[Math.floor(index / n)]! : '',
        logprobs: body.logprobs != null ? emptyCompletionLogprobs() : null,
        finish_reason: null,
      }));
      for await (const { prompt, delta } of group.deltas()) {
        usage.add(prompt, delta);
        const choice = choices[prompt * n + delta.index]!;
        if (choice.logprobs && delta.logprobs) appendCompletionLogprobs(choice.logprobs, delta.logprobs, ctx.tokenText, choice.text.length);
        choice.text += delta.text;
        if (delta.finishReason !== null) {
          choice.finish_reason = delta.finishReason;
          choice.matched_stop = delta.matchedStop;
        }
      }
      const response: CompletionResponse = { ...head, choices, usage: usage.info() };
      if (group.clientGone) reply.hijack();
      else await reply.send(response);
    }
    logRequest(ctx, 'completions', id, usage.promptTokens, usage.completionTokens, group.elapsedMs(), group.clientGone ? 'client gone' : 'done');
  } finally {
    group.dispose();
  }
}

function tokenizePrompts(ctx: ServerContext, prompt: CompletionRequest['prompt']): number[][] {
  const tokenizer = ctx.model.tokenizer;
  let prompts: number[][];
  if (typeof prompt === 'string') prompts = [tokenizer.encode(prompt)];
  else if (prompt.every((p) => typeof p === 'string')) prompts = (prompt as string[]).map((p) => tokenizer.encode(p));
  else if (prompt.every((p) => typeof p === 'number')) prompts = [prompt as number[]];
  else prompts = prompt as number[][];
  prompts.forEach((ids, i) => checkTokenIds(ctx, ids, prompts.length === 1 ? 'prompt' : `prompt[${i}]`));
  return prompts;
}

/** The prompt as the client gave it: its strings, or its token ids decoded. */
function echoTexts(ctx: ServerContext, prompt: CompletionRequest['prompt'], prompts: number[][]): string[] {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((p) => typeof p === 'string')) return prompt as string[];
  return prompts.map((ids) => ctx.model.tokenizer.decode(ids, false));
}
