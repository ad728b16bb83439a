import type { Socket } from 'node:net';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { ApiError } from './errors.js';

/**
 * HTTP edge cases, answered in the OpenAI error shape: bodies in a content or transfer coding the
 * server does not decode are refused before they are read; errors of the HTTP parser itself
 * (malformed requests, headers too large, a client too slow to send its request) get a JSON
 * body too; a JSON body with a key that could poison prototypes is refused by name.
 */
export function registerHttpEdges(app: FastifyInstance): void {
  app.server.on('request', (request: IncomingMessage) => {
    const socket = request.socket as CountedSocket;
    socket[requestsSeen] = (socket[requestsSeen] ?? 0) + 1;
    socket[lastRequest] = request;
  });
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

const requestsSeen = Symbol('requestsSeen');
const lastRequest = Symbol('lastRequest');
type CountedSocket = Socket & { [requestsSeen]?: number; [lastRequest]?: IncomingMessage };

/**
 * Node's http parser errors, as fastify's clientErrorHandler: one JSON error, then the connection
 * closes. `bodyTimeoutMs` bounds the body of a request rescued from a timeout of the server's own
 * making (below).
 */
export function clientErrorHandler(bodyTimeoutMs: number): (error: Error & { code?: string }, socket: Socket) => void {
  return (error, socket) => onClientError(error, socket, bodyTimeoutMs);
}

function onClientError(error: Error & { code?: string }, socket: Socket, bodyTimeoutMs: number): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    // Node checks these timeouts in the timers phase, before the poll phase that reads sockets:
    // after the HTTP thread was busy for longer than the timeout (a burst of a thousand requests
    // arriving at once, on a loaded machine), a connection accepted at the start of that stretch
    // expires with its request already waiting, unread, in the kernel. The verdict waits for one
    // poll phase (setImmediate runs after it): a request that arrived meanwhile is served.
    const counted = socket as CountedSocket;
    const seen = counted[requestsSeen] ?? 0;
    setImmediate(() => {
      if ((counted[requestsSeen] ?? 0) === seen) {
        answerParserError(error, socket);
        return;
      }
      // Node no longer times this request; the body (if still arriving) gets the body timeout.
      const request = counted[lastRequest]!;
      if (request.complete) return;
      const timer = setTimeout(() => {
        if (!request.complete) answerParserError(error, socket);
      }, bodyTimeoutMs);
      timer.unref();
      request.once('end', () => clearTimeout(timer)).once('close', () => clearTimeout(timer));
    });
    return;
  }
  answerParserError(error, socket);
}

function answerParserError(error: Error & { code?: string }, socket: Socket): void {
  if (!socket.writable) {
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
