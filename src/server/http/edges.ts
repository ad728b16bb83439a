import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { ApiError } from './errors.js';

/**
 * HTTP edge cases, answered in the OpenAI error shape: bodies in a content or transfer coding the
 * server does not decode are refused before they are read; errors of the HTTP parser itself
 * (malformed requests, headers too large, a client too slow to send its request) get a JSON
 * body too; a JSON body with a key that could poison prototypes is refused by name.
 */
export function registerHttpEdges(app: FastifyInstance): void {
  app.addHook('onRequest', async (request) => {
    const transfer = request.headers['transfer-encoding'];
    if (transfer !== undefined && transfer.trim().toLowerCase() !== 'chunked') {
      throw new ApiError(400, `Transfer-Encoding ${JSON.stringify(transfer)} is not supported (only "chunked").`, 'invalid_request_error', null, 'unsupported_transfer_encoding');
    }
    const content = request.headers['content-encoding'];
    if (content !== undefined && content.trim().toLowerCase() !== 'identity') {
      throw new ApiError(415, `Content-Encoding ${JSON.stringify(content)} is not supported: send the body uncompressed.`, 'invalid_request_error', null, 'unsupported_content_encoding');
    }
  });
  const parseJson = app.getDefaultJsonParser('error', 'ignore');
  // Any content type is read as JSON, so `curl -d '{...}'` works without a content-type header.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (request, body, done) =>
    parseJson(request, body as string, (error, value) => {
      if (error && (error as { code?: string }).code === 'FST_ERR_CTP_INVALID_JSON_BODY' && isPlainJson(body as string)) {
        done(new ApiError(400, 'The request body has a forbidden key: "__proto__".', 'invalid_request_error', null, 'forbidden_key'), undefined);
      } else {
        done(error, value);
      }
    }),
  );
}

function isPlainJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Node's http parser errors, as fastify's clientErrorHandler: one JSON error, then the connection closes. */
export function clientErrorHandler(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const message =
    status === 431 ? 'The request headers are too large.' : status === 408 ? 'The request was not received in time.' : `Malformed HTTP request (${error.code ?? error.message}).`;
  const body = JSON.stringify(new ApiError(status, message, 'invalid_request_error', null, status === 400 ? 'bad_request' : null).body());
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
