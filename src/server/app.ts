import Fastify, { type FastifyInstance } from 'fastify';
import type { ServerContext } from './context.js';
import { ApiError, toApiError } from './http/errors.js';
import { registerAuth } from './http/auth.js';
import { registerChat } from './routes/chat.js';
import { registerCompletions } from './routes/completions.js';
import { registerGenerate } from './routes/generate.js';
import { registerInfo } from './routes/info.js';
import { registerReplicaRoutes } from './routes/replica.js';
import { registerTokenize } from './routes/tokenize.js';
import { validatorCompiler } from './http/validator.js';

/** Request bodies up to this size (a long prompt as token ids is a few MB). */
const bodyLimit = 64 * 1024 * 1024;

/**
 * The fastify app with every route; listening is up to the caller.
 * OpenAI: POST /v1/completions, POST /v1/chat/completions, GET /v1/models[/<name>].
 * SGLang: POST /generate, GET /[get_]model_info, GET /[get_]server_info, GET /get_load, POST /abort_request, POST|GET /flush_cache.
 * vLLM: POST /tokenize, POST /detokenize. Operations: GET /health (liveness), GET /readiness, GET /health_generate, GET /metrics, GET /version.
 */
export function buildApp(ctx: ServerContext, options: { apiKey: string | null; version: string }): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit, forceCloseConnections: 'idle', return503OnClosing: false });
  app.setValidatorCompiler(validatorCompiler);
  // Any content type is read as JSON, so `curl -d '{...}'` works without a content-type header.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('*', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'ignore'));
  app.setErrorHandler((error, _request, reply) => {
    const apiError = toApiError(error);
    if (apiError.status >= 500 && apiError.code === null) ctx.log.error(`${apiError.message}\n${(error as Error).stack ?? ''}`);
    return sendError(reply, apiError);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ApiError(404, `Unknown route: ${request.method} ${request.url.split('?')[0]}`, 'invalid_request_error', null, 'not_found')),
  );
  registerAuth(app, options.apiKey);
  registerCompletions(app, ctx);
  registerChat(app, ctx);
  registerGenerate(app, ctx);
  registerTokenize(app, ctx);
  registerInfo(app, ctx, options.version);
  registerReplicaRoutes(app, ctx, options.version);
  return app;
}

function sendError(reply: import('fastify').FastifyReply, error: ApiError) {
  if (reply.sent || reply.raw.headersSent) return;
  return reply.code(error.status).headers(error.headers).send(error.body());
}
