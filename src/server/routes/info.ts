import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';
import { ApiError, unknownModel } from '../http/errors.js';
import { generationProblem, healthProblem } from './health.js';
import { unixSeconds } from './common.js';

const startedAt = unixSeconds();

export function registerInfo(app: FastifyInstance, ctx: ServerContext, version: string): void {
  const modelCard = () => ({
    id: ctx.servedModelName,
    object: 'model',
    created: startedAt,
    owned_by: 'sluice',
    root: ctx.model.path,
    parent: null,
    max_model_len: ctx.contextLength,
  });
  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard()] }));
  app.get<{ Params: { model: string } }>('/v1/models/*', async (request) => {
    const name = (request.params as Record<string, string>)['*']!;
    if (name !== ctx.servedModelName) throw unknownModel(name, ctx.servedModelName);
    return modelCard();
  });
  const modelInfo = async () => ({
    model_path: ctx.model.path,
    tokenizer_path: ctx.model.path,
    served_model_name: ctx.servedModelName,
    is_generation: true,
    context_length: ctx.contextLength,
  });
  app.get('/get_model_info', modelInfo);
  app.get('/model_info', modelInfo);
  app.get('/version', async () => ({ version }));
  app.get('/health', async (_request, reply) => {
    const problem = healthProblem(ctx);
    if (problem) throw new ApiError(503, problem, 'server_error', null, 'engine_unhealthy');
    return reply.code(200).send();
  });
  app.get('/health_generate', async (_request, reply) => {
    const problem = await generationProblem(ctx);
    if (problem) throw new ApiError(503, problem, 'server_error', null, 'engine_unhealthy');
    return reply.code(200).send();
  });
  const flush = async (_request: unknown, reply: import('fastify').FastifyReply) => {
    if (await ctx.engine.flushCache()) {
      ctx.log.info('prefix cache flushed');
      return reply.type('text/plain').send('Cache flushed.\n');
    }
    throw new ApiError(400, 'Cache not flushed: there are running or waiting requests.', 'invalid_request_error', null, 'requests_in_flight');
  };
  app.post('/flush_cache', flush);
  app.get('/flush_cache', flush);
  app.get('/metrics', async (_request, reply) => {
    return reply.type(ctx.metrics.contentType).send(ctx.metrics.render());
  });
}
