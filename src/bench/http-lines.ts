import http from 'node:http';
import https from 'node:https';
import { StringDecoder } from 'node:string_decoder';

/** Why a request failed, in a few words (what the reports count), plus the details. */
export class RequestFailure extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export interface LineRequestOptions {
  method?: 'GET' | 'POST';
  body?: unknown;
  headers?: Record<string, string>;
  /** The whole request must finish within this time. */
  timeoutMs: number;
  /** Fail when no byte arrives for this long (response headers included). */
  stallTimeoutMs: number;
  agent?: http.Agent;
  /** Each line of a 200 response body as it arrives, without its line break. */
  onLine(line: string): void;
}

export interface LineResponse {
  status: number;
  statusText: string;
  /** The start of the body of a non-200 response (for the error message). */
  errorBody: string;
}

const maxErrorBody = 2000;

/** Sends one HTTP request and hands the response body to onLine line by line as it streams in. */
export function requestLines(url: URL, options: LineRequestOptions): Promise<LineResponse> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    const headers: Record<string, string | number> = { ...options.headers };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    const client = url.protocol === 'https:' ? https : http;
    const request = client.request(url, { method: options.method ?? 'POST', headers, agent: options.agent });

    const finish = (error: RequestFailure | null, response?: LineResponse) => {
      if (settled) return;
      settled = true;
      clearTimeout(totalTimer);
      clearTimeout(stallTimer);
      if (error) {
        request.destroy();
        reject(error);
      } else resolve(response!);
    };
    const totalTimer = setTimeout(
      () => finish(new RequestFailure('timeout', `no complete response within ${options.timeoutMs / 1000} s`)),
      options.timeoutMs,
    );
    let stallTimer = setTimeout(() => {}, 0);
    const armStallTimer = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(
        () => finish(new RequestFailure('stalled', `no data from the server for ${options.stallTimeoutMs / 1000} s`)),
        options.stallTimeoutMs,
      );
    };
    armStallTimer();

    request.on('error', (e: NodeJS.ErrnoException) => finish(connectionFailure(e)));
    request.on('response', (response) => {
      armStallTimer();
      const status = response.statusCode ?? 0;
      const statusText = response.statusMessage ?? '';
      const decoder = new StringDecoder('utf8');
      let pending = '';
      let errorBody = '';
      response.on('data', (chunk: Buffer) => {
        armStallTimer();
        if (settled) return;
        if (status !== 200) {
          if (errorBody.length < maxErrorBody) errorBody += decoder.write(chunk);
          return;
        }
        pending += decoder.write(chunk);
        let newline: number;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          try {
            options.onLine(line);
          } catch (e) {
            finish(e instanceof RequestFailure ? e : new RequestFailure('bad response', (e as Error).message));
            return;
          }
        }
      });
      response.on('end', () => {
        if (settled) return;
        pending += decoder.end();
        if (status === 200 && pending.length > 0) {
          try {
            options.onLine(pending);
          } catch (e) {
            finish(e instanceof RequestFailure ? e : new RequestFailure('bad response', (e as Error).message));
            return;
          }
        }
        finish(null, { status, statusText, errorBody: errorBody.slice(0, maxErrorBody) });
      });
      response.on('error', (e: NodeJS.ErrnoException) => finish(connectionFailure(e)));
      response.on('close', () => {
        if (!response.complete) finish(new RequestFailure('connection dropped', 'the server closed the connection before the response was complete'));
      });
    });
    request.end(payload);
  });
}

function connectionFailure(e: NodeJS.ErrnoException): RequestFailure {
  if (e instanceof RequestFailure) return e;
  switch (e.code) {
    case 'ECONNREFUSED':
      return new RequestFailure('connection refused', e.message);
    case 'ECONNRESET':
    case 'EPIPE':
      return new RequestFailure('connection dropped', e.message);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new RequestFailure('unknown host', e.message);
    default:
      return new RequestFailure(e.code ? `network error ${e.code}` : 'network error', e.message);
  }
}

/** GETs a JSON document (e.g. /v1/models) with a timeout. */
export async function getJson(url: URL, timeoutMs: number, headers: Record<string, string> = {}): Promise<unknown> {
  const lines: string[] = [];
  const response = await requestLines(url, {
    method: 'GET',
    headers,
    timeoutMs,
    stallTimeoutMs: timeoutMs,
    onLine: (line) => lines.push(line),
  });
  if (response.status !== 200) {
    throw new RequestFailure(`HTTP ${response.status}`, `GET ${url.href}: HTTP ${response.status} ${response.statusText} ${response.errorBody}`.trim());
  }
  try {
    return JSON.parse(lines.join('\n'));
  } catch {
    throw new RequestFailure('bad response', `GET ${url.href}: the response is not JSON`);
  }
}
