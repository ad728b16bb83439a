import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ServerContext } from '../context.js';
import { DetokenizeRequest, TokenizeRequest, type DetokenizeResponse, type TokenizeResponse } from '../protocol/vllm.js';
import { checkModel, checkTokenIds, encodePrompt } from './common.js';
import { renderPrompt } from './chat.js';

export function registerTokenize(app: FastifyInstance, ctx: ServerContext): void {
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.post('/tokenize', { schema: { body: TokenizeRequest } }, async (request): Promise<TokenizeResponse> => {
    const body = request.body;
    checkModel(ctx, body.model);
    const tokenizer = ctx.model.tokenizer;
    let tokens: number[];
    if ('messages' in body) {
      tokens = await renderPrompt(ctx, body.messages, body.add_generation_prompt ?? true);
      if (body.add_special_tokens) tokens = tokenizer.encode(tokenizer.decode(tokens, false), true);
    } else {
      tokens = await encodePrompt(ctx, body.prompt, 'prompt', body.add_special_tokens ?? true);
    }
    const response: TokenizeResponse = { count: tokens.length, max_model_len: ctx.contextLength, tokens };
    if (body.return_token_strs) response.token_strs = tokens.map((id) => tokenizer.idToToken(id) ?? '');
    return response;
  });
  typed.post('/detokenize', { schema: { body: DetokenizeRequest } }, async (request): Promise<DetokenizeResponse> => {
    checkModel(ctx, request.body.model);
    checkTokenIds(ctx, request.body.tokens, 'tokens');
    return { prompt: ctx.model.tokenizer.decode(request.body.tokens, false) };
  });
}
