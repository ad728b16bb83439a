import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { GenerateDelta, SamplingParams } from '../../engine/types.js';
import type { ServerContext } from '../context.js';
import { invalidParam, toApiError } from '../errors.js';
import { GenerationGroup } from '../generation.js';
import { GenerateRequestBody, type SglangFinishReason, type SglangGenerateResponse, type SglangSamplingParams } from '../protocol/sglang.js';
import { checkContext, checkTokenIds, logRequest, newId } from '../request-common.js';
import { toSamplingParams } from '../sampling.js';
import { streamEvents } from '../sse.js';

/** SGLang's default max_new_tokens for /generate. */
export const defaultGenerateMaxNewTokens = 128;

export function registerGenerate(app: FastifyInstance, ctx: ServerContext): void {
  app.withTypeProvider<TypeBoxTypeProvider>().post('/generate', { schema: { body: GenerateRequestBody } }, (request, reply) => generate(ctx, request, reply));
}

async function generate(ctx: ServerContext, request: FastifyRequest<{ Body: GenerateRequestBody }>, reply: FastifyReply) {
  const body = request.body;
  const prompts = tokenizeInput(ctx, body);
  const sp: SglangSamplingParams = body.sampling_params ?? {};
  const maxTokens = sp.max_new_tokens ?? defaultGenerateMaxNewTokens;
  for (const prompt of prompts) checkContext(ctx, prompt.length, maxTokens, body.text != null ? 'text' : 'input_ids');
  const logprobs = body.return_logprob ? (body.top_logprobs_num ?? 0) : null;
  const params: Partial<SamplingParams> = toSamplingParams({ ...sp, seed: sp.seed ?? sp.sampling_seed }, maxTokens, logprobs, ctx.model.config.vocabSize);
  const n = params.n ?? 1;
  const rids = typeof body.rid === 'string' ? [body.rid] : body.rid;
  if (rids && rids.length !== prompts.length) throw invalidParam('rid', `rid has ${rids.length} ids for ${prompts.length} prompts.`);
  const baseId = newId('gen');
  const ids = prompts.map((_, i) => rids?.[i] ?? (prompts.length === 1 ? baseId : `${baseId}-${i}`));
  const group = new GenerationGroup(
    ctx,
    prompts.map((promptTokenIds, i) => ({ id: ids[i]!, promptTokenIds, params })),
    reply.raw,
  );
  const outputs: SglangGenerateResponse[] = Array.from({ length: prompts.length * n }, (_, index) => {
    const prompt = Math.floor(index / n);
    return {
      text: '',
      output_ids: [],
      meta_info: {
        id: ids[prompt]!,
        prompt_tokens: prompts[prompt]!.length,
        completion_tokens: 0,
        cached_tokens: 0,
        finish_reason: null,
        e2e_latency: 0,
        ...(logprobs !== null ? { output_token_logprobs: [], output_top_logprobs: [] } : {}),
      },
    };
  });
  const apply = (prompt: number, delta: GenerateDelta): SglangGenerateResponse => {
    const out = outputs[prompt * n + delta.index]!;
    out.text += delta.text;
    out.output_ids.push(...delta.tokenIds);
    const meta = out.meta_info;
    meta.completion_tokens = out.output_ids.length;
    meta.e2e_latency = group.elapsedMs() / 1000;
    if (delta.usage) meta.cached_tokens = delta.usage.cachedTokens;
    if (delta.finishReason !== null) meta.finish_reason = finishReason(delta, out.output_ids.length);
    for (const lp of delta.logprobs ?? []) {
      meta.output_token_logprobs?.push([lp.logprob, lp.tokenId, ctx.tokenText.text(lp.tokenId)]);
      meta.output_top_logprobs?.push(lp.top.map((t) => [t.logprob, t.tokenId, ctx.tokenText.text(t.tokenId)]));
    }
    return out;
  };
  try {
    await group.ready();
    if (body.stream) {
      await streamEvents(
        reply,
        async (sse) => {
          for await (const { prompt, delta } of group.deltas()) {
            const out = apply(prompt, delta);
            await sse.send(outputs.length > 1 ? { ...out, index: prompt * n + delta.index } : out);
            if (sse.closed) break;
          }
        },
        (e) => toApiError(e).body(),
      );
    } else {
      for await (const { prompt, delta } of group.deltas()) apply(prompt, delta);
      const single = body.text == null ? !Array.isArray(body.input_ids?.[0]) : typeof body.text === 'string';
      if (group.clientGone) reply.hijack();
      else await reply.send(single && n === 1 ? outputs[0] : outputs);
    }
    const completion = outputs.reduce((sum, o) => sum + o.output_ids.length, 0);
    const promptTokens = prompts.reduce((sum, p) => sum + p.length, 0);
    logRequest(ctx, 'generate', ids[0]!, promptTokens, completion, group.elapsedMs(), group.clientGone ? 'client gone' : 'done');
  } finally {
    group.dispose();
  }
}

function finishReason(delta: GenerateDelta, length: number): SglangFinishReason {
  switch (delta.finishReason) {
    case 'stop':
      return { type: 'stop', matched: delta.matchedStop };
    case 'length':
      return { type: 'length', length };
    case 'abort':
      return { type: 'abort' };
    default:
      return null;
  }
}

function tokenizeInput(ctx: ServerContext, body: GenerateRequestBody): number[][] {
  if ((body.text == null) === (body.input_ids == null)) throw invalidParam('text', 'Give exactly one of text or input_ids.');
  let prompts: number[][];
  if (body.text != null) {
    const texts = typeof body.text === 'string' ? [body.text] : body.text;
    prompts = texts.map((t) => ctx.model.tokenizer.encode(t));
  } else {
    const ids = body.input_ids!;
    prompts = ids.every((x) => typeof x === 'number') ? [ids as number[]] : (ids as number[][]);
  }
  prompts.forEach((p, i) => checkTokenIds(ctx, p, prompts.length === 1 ? 'input_ids' : `input_ids[${i}]`));
  return prompts;
}
