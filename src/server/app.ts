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
import cors from '@fastify/cors';
import { clientErrorHandler, registerHttpEdges } from './http/edges.js';
import { registerRequestId } from './http/request-id.js';
import { generationBodyLimit } from './http/settings.js';

/**
 * The fastify app with every route; listening is up to the caller.
 * OpenAI: POST /v1/completions, POST /v1/chat/completions, GET /v1/models[/<name>].
 * SGLang: POST /generate, GET /[get_]model_info, GET /[get_]server_info, GET /get_load, POST /abort_request, POST|GET /flush_cache.
 * vLLM: POST /tokenize, POST /detokenize. Operations: GET /health (liveness), GET /readiness, GET /health_generate, GET /metrics, GET /version.
 */
export function buildApp(ctx: ServerContext, options: { apiKey: string | null; version: string }): FastifyInstance {
  const http = ctx.http;
  const app = Fastify({
    logger: false,
    // No route takes more than a context's worth of prompt (bodies are parsed on the engine's thread).
    bodyLimit: generationBodyLimit(ctx.contextLength, ctx.tokenText.maxTokenBytes),
    forceCloseConnections: 'idle',
    return503OnClosing: false,
    // Slow clients: headers, then the whole request, within these times; idle keep-alive closes.
    requestTimeout: http.bodyTimeoutMs,
    keepAliveTimeout: http.keepAliveTimeoutMs,
    http: { headersTimeout: Math.min(http.headersTimeoutMs, http.bodyTimeoutMs), connectionsCheckingInterval: Math.min(1000, http.headersTimeoutMs / 2) },
    clientErrorHandler: clientErrorHandler(http.bodyTimeoutMs),
  });
  app.setValidatorCompiler(validatorCompiler);
  registerRequestId(app);
  if (http.allowedOrigins.length > 0) {
    app.register(cors, { origin: http.allowedOrigins.includes('*') ? '*' : http.allowedOrigins, exposedHeaders: ['x-request-id'] });
  }
  registerHttpEdges(app);
  // While draining, every answer closes its connection: keep-alive clients reconnect, and the port closes once requests end.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (ctx.draining) reply.header('connection', 'close');
    done(null, payload);
  });
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
