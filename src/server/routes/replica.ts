import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import type { ServerContext } from '../context.js';
import { ApiError } from '../http/errors.js';
import { healthProblem } from './health.js';

const AbortRequestBody = Type.Object(
  {
    rid: Type.Optional(Type.String()),
    abort_all: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
type AbortRequestBody = Static<typeof AbortRequestBody>;

/**
 * What the LLM-aware routers read from a replica besides /metrics: SGLang's server description
 * (/server_info, /get_server_info), its load report (/get_load), request abort (/abort_request),
 * and readiness (/readiness: 503 while draining, so routers and Kubernetes stop sending traffic
 * before the process goes away; /health stays the liveness answer).
 */
export function registerReplicaRoutes(app: FastifyInstance, ctx: ServerContext, version: string): void {
  const serverInfo = () => {
    const s = ctx.engine.settings;
    const stats = ctx.engine.stats();
    const address = app.server.address();
    return {
      model_path: ctx.model.path,
      tokenizer_path: ctx.model.path,
      served_model_name: ctx.servedModelName,
      host: typeof address === 'object' && address ? address.address : null,
      port: typeof address === 'object' && address ? address.port : null,
      context_length: ctx.contextLength,
      max_total_tokens: s.maxTotalTokens,
      max_running_requests: s.maxRunningRequests,
      max_queued_requests: s.maxQueuedRequests,
      max_prefill_tokens: s.maxPrefillTokens,
      chunked_prefill_size: s.chunkedPrefillSize,
      page_size: s.pageSize,
      schedule_policy: s.schedulePolicy,
      disable_radix_cache: s.disableRadixCache,
      tp_size: ctx.tpSize,
      dp_size: 1,
      kv_events_config: ctx.kvEvents ? { publisher: 'zmq', ...ctx.kvEvents.config } : null,
      internal_states: [{ max_total_num_tokens: s.maxTotalTokens, last_gen_throughput: null, num_running_reqs: stats.runningRequests, num_waiting_reqs: stats.waitingRequests }],
      version,
    };
  };
  app.get('/server_info', async () => serverInfo());
  app.get('/get_server_info', async () => serverInfo());

  app.get('/get_load', async () => {
    const stats = ctx.engine.stats();
    return [
      {
        dp_rank: 0,
        num_reqs: stats.runningRequests + stats.waitingRequests,
        num_waiting_reqs: stats.waitingRequests,
        num_tokens: stats.kvPagesUsed * stats.pageSize,
      },
    ];
  });

  app.withTypeProvider<TypeBoxTypeProvider>().post('/abort_request', { schema: { body: AbortRequestBody } }, async (request, reply) => {
    const { rid, abort_all: abortAll } = request.body as AbortRequestBody;
    if (!abortAll && (rid === undefined || rid === '')) throw new ApiError(400, 'Give rid (a request id) or abort_all: true.', 'invalid_request_error', 'rid');
    // One prompt of a multi-prompt request ends alone (its stream gets finish_reason "abort"); the others go on.
    if (abortAll) for (const inFlight of ctx.inFlight) inFlight.abort();
    else ctx.engine.abort(rid!);
    return reply.code(200).send();
  });

  app.get('/readiness', async (_request, reply) => {
    const problem = ctx.draining ? 'The server is draining: it takes no new requests.' : healthProblem(ctx);
    if (problem) throw new ApiError(503, problem, 'server_error', null, 'not_ready');
    return reply.code(200).send();
  });
}
