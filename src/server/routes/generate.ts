import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { defaultMaxTokens, defaultSamplingParams } from '../../engine/request-parameters.js';
import type { ServerContext } from '../context.js';
import { invalidParam } from '../http/errors.js';
import { refuseUnsupported, toSamplingParams } from '../protocol/sampling.js';
import { sglangGrammar } from '../protocol/structured-output.js';
import { SglangAccumulator } from '../protocol/sglang-accumulator.js';
import { GenerateRequestBody, type SglangSamplingParams } from '../protocol/sglang.js';
import { encodePrompt, newId } from './common.js';
import { replyWithGeneration } from './respond.js';

export function registerGenerate(app: FastifyInstance, ctx: ServerContext): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/generate', { schema: { body: GenerateRequestBody } }, (request, reply) => generate(ctx, request, reply));
}

async function generate(ctx: ServerContext, request: FastifyRequest<{ Body: GenerateRequestBody }>, reply: FastifyReply) {
  const body = request.body;
  refuseUnsupported(body as Record<string, unknown>);
  const prompts = await tokenizeInput(ctx, body);
  const sp: SglangSamplingParams = body.sampling_params ?? {};
  const logprobs = body.return_logprob ? (body.top_logprobs_num ?? 0) : null;
  const sampling = toSamplingParams({ ...sp, seed: sp.seed ?? sp.sampling_seed }, sp.max_new_tokens ?? defaultMaxTokens.generate, logprobs);
  // SGLang: input log-probs from logprob_start_len on; -1 (its default) asks none.
  const start = body.return_logprob && body.logprob_start_len != null && body.logprob_start_len >= 0 ? body.logprob_start_len : null;
  const params = { ...sampling, grammar: sglangGrammar(sp), promptLogprobs: start === null ? null : (body.top_logprobs_num ?? 0), promptLogprobsStart: start ?? 0 };
  const rids = typeof body.rid === 'string' ? [body.rid] : body.rid;
  if (rids && rids.length !== prompts.length) throw invalidParam('rid', `rid has ${rids.length} ids for ${prompts.length} prompts.`);
  const baseId = newId('gen');
  const ids = prompts.map((_, i) => rids?.[i] ?? (prompts.length === 1 ? baseId : `${baseId}-${i}`));
  const field = body.text != null ? 'text' : 'input_ids';
  await replyWithGeneration(ctx, reply, {
    route: 'generate',
    id: ids[0]!,
    requests: prompts.map((promptTokenIds, i) => ({ id: ids[i]!, promptTokenIds, params, promptParam: prompts.length === 1 ? field : `${field}[${i}]` })),
    stream: body.stream === true,
    accumulator: (generation) =>
      new SglangAccumulator({
        ids,
        promptLengths: prompts.map((p) => p.length),
        n: params.n ?? defaultSamplingParams.n,
        logprobs: logprobs !== null,
        inputLogprobsStart: start,
        single: body.text == null ? !Array.isArray(body.input_ids?.[0]) : typeof body.text === 'string',
        elapsedSeconds: () => generation.elapsedMs() / 1000,
        tokenText: ctx.tokenText,
      }),
  });
}

async function tokenizeInput(ctx: ServerContext, body: GenerateRequestBody): Promise<number[][]> {
  if ((body.text == null) === (body.input_ids == null)) throw invalidParam('text', 'Give exactly one of text or input_ids.');
  if (body.text != null) {
    return Promise.all(typeof body.text === 'string' ? [encodePrompt(ctx, body.text, 'text')] : body.text.map((t, i) => encodePrompt(ctx, t, `text[${i}]`)));
  }
  const ids = body.input_ids!;
  return ids.every((x) => typeof x === 'number') ? [ids as number[]] : (ids as number[][]);
}
