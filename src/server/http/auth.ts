import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { ApiError } from './errors.js';

/** Routes that monitoring reaches without a key. */
const openRoutes = new Set(['/health', '/health_generate', '/readiness', '/metrics', '/version']);

/** With --api-key, every other route needs `Authorization: Bearer <key>` (or `x-api-key`). */
export function registerAuth(app: FastifyInstance, apiKey: string | null): void {
  if (!apiKey) return;
  const expected = Buffer.from(apiKey);
  app.addHook('onRequest', async (request) => {
    // CORS preflights carry no credentials.
    if (request.method === 'OPTIONS' || openRoutes.has(request.url.split('?')[0]!)) return;
    const given = bearerToken(request.headers.authorization) ?? (request.headers['x-api-key'] as string | undefined);
    if (given === undefined) {
      throw new ApiError(401, 'Missing API key: send "Authorization: Bearer <key>".', 'invalid_request_error', null, 'invalid_api_key');
    }
    const actual = Buffer.from(given);
    if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
      throw new ApiError(401, 'Incorrect API key provided.', 'invalid_request_error', null, 'invalid_api_key');
    }
  });
}

/** The credentials of `Authorization: Bearer <key>`; the scheme name is case-insensitive (RFC 9110). */
function bearerToken(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^bearer[ \t]+(.*)$/i.exec(header);
  return match ? match[1]!.trim() : undefined;
}
