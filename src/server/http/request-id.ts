import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';

/** What a client may send as X-Request-Id: printable ASCII, not too long (it goes into logs). */
const acceptable = /^[\x21-\x7e]{1,128}$/;

const requestIds = new WeakMap<FastifyRequest, string>();

/** Every answer carries X-Request-Id: the client's own when it sent a usable one, else a new one. */
export function registerRequestId(app: FastifyInstance): void {
  app.addHook('onRequest', async (request, reply) => {
    const given = request.headers['x-request-id'];
    const id = typeof given === 'string' && acceptable.test(given) ? given : randomUUID();
    requestIds.set(request, id);
    reply.header('x-request-id', id);
  });
}

export function requestIdOf(request: FastifyRequest): string | null {
  return requestIds.get(request) ?? null;
}
