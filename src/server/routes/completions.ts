import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { defaultMaxTokens, defaultSamplingParams } from '../../engine/request-parameters.js';
import type { ServerContext } from '../context.js';
import { invalidParam } from '../http/errors.js';
import { CompletionAccumulator } from '../protocol/completions-accumulator.js';
import { CompletionRequest } from '../protocol/completions.js';
import { bestOfRequested, withBestOf } from '../protocol/best-of.js';
import { toSamplingParams } from '../protocol/sampling.js';
import { openAiGrammar } from '../protocol/structured-output.js';
import { checkModel, encodePrompt, newId, unixSeconds } from './common.js';
import { replyWithGeneration } from './respond.js';

export function registerCompletions(app: FastifyInstance, ctx: ServerContext): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/v1/completions', { schema: { body: CompletionRequest } }, (request, reply) =>
    completions(ctx, request, reply),
  );
}

async function completions(ctx: ServerContext, request: FastifyRequest<{ Body: CompletionRequest }>, reply: FastifyReply) {
  const body = request.body;
  checkModel(ctx, body.model);
  if (body.suffix) throw invalidParam('suffix', 'suffix is not supported.');
  const prompts = await tokenizePrompts(ctx, body.prompt);
  // echo with logprobs lists the prompt's tokens with their log-probs (lm-eval's loglikelihood); vLLM's prompt_logprobs lists them apart.
  const echoLogprobs = body.echo === true && body.logprobs != null;
  const promptLogprobs = echoLogprobs || body.prompt_logprobs != null ? Math.max(echoLogprobs ? body.logprobs! : 0, body.prompt_logprobs ?? 0) : null;
  const bestOf = bestOfRequested(body, body.logprobs ?? null);
  const params = {
    ...toSamplingParams(body, body.max_tokens ?? defaultMaxTokens.completions, body.logprobs ?? null),
    grammar: openAiGrammar(body),
    promptLogprobs,
  };
  const id = newId('cmpl');
  const created = unixSeconds();
  await replyWithGeneration(ctx, reply, {
    route: 'completions',
    id,
    requests: prompts.map((promptTokenIds, i) => ({
      id: prompts.length === 1 ? id : `${id}-${i}`,
      promptTokenIds,
      params: withBestOf(params, bestOf),
      promptParam: prompts.length === 1 ? 'prompt' : `prompt[${i}]`,
    })),
    stream: body.stream === true,
    bestOf,
    accumulator: () =>
      new CompletionAccumulator({
        id,
        created,
        model: ctx.servedModelName,
        promptLengths: prompts.map((p) => p.length),
        n: params.n ?? defaultSamplingParams.n,
        echo: body.echo ? echoTexts(ctx, body.prompt, prompts) : null,
        logprobs: body.logprobs != null,
        echoLogprobs,
        vllmPromptLogprobs: body.prompt_logprobs != null,
        promptIsText: typeof body.prompt === 'string' || typeof body.prompt[0] === 'string',
        skipSpecialTokens: body.skip_special_tokens ?? undefined,
        includeUsage: !body.stream || body.stream_options?.include_usage === true,
        tokenText: ctx.tokenText,
      }),
  });
}

/** Prompts tokenized between two yields to the event loop: 2048 prompts in one go would hold it for a second. */
const promptsPerTurn = 64;

async function tokenizePrompts(ctx: ServerContext, prompt: CompletionRequest['prompt']): Promise<number[][]> {
  if (typeof prompt === 'string') return [await encodePrompt(ctx, prompt, 'prompt')];
  if (prompt.every((p) => typeof p === 'string')) {
    const texts = prompt as string[];
    const out: number[][] = [];
    for (let from = 0; from < texts.length; from += promptsPerTurn) {
      if (from > 0) await yieldToEventLoop();
      const turn = texts.slice(from, from + promptsPerTurn).map((p, i) => encodePrompt(ctx, p, texts.length === 1 ? 'prompt' : `prompt[${from + i}]`));
      out.push(...(await Promise.all(turn)));
    }
    return out;
  }
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return prompt as number[][];
}

/** The prompt as the client gave it: its strings, or its token ids decoded. */
function echoTexts(ctx: ServerContext, prompt: CompletionRequest['prompt'], prompts: number[][]): string[] {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((p) => typeof p === 'string')) return prompt as string[];
  return prompts.map((ids) => ctx.model.tokenizer.decode(ids, false));
}
