import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small stand-in for an OpenAI-compatible server (plus SGLang's /generate), for testing the
 * client's protocol handling and failure paths. A prompt containing one of these markers
 * misbehaves on purpose:
 *   [[error]]  HTTP 500 with an OpenAI error body
 *   [[stall]]  sends headers and one chunk, then nothing
 *   [[hang]]   never answers at all
 *   [[drop]]   sends two chunks, then destroys the socket
 *   [[nodone]] ends the stream cleanly without data: [DONE]
 */
export interface FakeServerOptions {
  model?: string;
  /** Delay before each streamed token. */
  tokenDelayMs?: number;
  /** Text of each streamed token. */
  tokenText?: string;
  /** Misbehaves on the n-th (1-based) generation request as a marker in its prompt would. */
  sabotage?: (n: number) => 'error' | 'stall' | 'drop' | null;
  /** Holds generation requests from the `from`-th (1-based) on until `until` of them have arrived. */
  barrier?: { from: number; until: number };
}

export interface ReceivedRequest {
  path: string;
  method: string;
  headers: http.IncomingHttpHeaders;
  body: any;
  /** performance.now() when the request arrived. */
  at: number;
}

export interface FakeServer {
  url: string;
  port: number;
  received: ReceivedRequest[];
  close(): Promise<void>;
}

export async function startFakeServer(options: FakeServerOptions = {}): Promise<FakeServer> {
  const model = options.model ?? 'fake-model';
  const tokenDelayMs = options.tokenDelayMs ?? 1;
  const tokenText = options.tokenText ?? ' tok';
  const received: ReceivedRequest[] = [];
  let generationRequests = 0;
  const held: (() => void)[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, f: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      f();
    }, ms);
    timers.add(t);
  };

  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const body = raw ? JSON.parse(raw) : undefined;
      received.push({ path: req.url ?? '', method: req.method ?? '', headers: req.headers, body, at: performance.now() });
      if (req.method === 'GET' && req.url === '/v1/models') return json(res, 200, { object: 'list', data: [{ id: model, object: 'model' }] });
      if (req.method === 'GET' && req.url === '/health') return json(res, 200, { status: 'ok' });
      const kind = req.url === '/v1/completions' ? 'completion' : req.url === '/v1/chat/completions' ? 'chat' : req.url === '/generate' ? 'generate' : null;
      if (req.method !== 'POST' || kind === null) return json(res, 404, { error: { message: 'not found', type: 'not_found', param: null, code: 404 } });
      let prompt: string = kind === 'chat' ? body.messages[0].content : kind === 'generate' ? body.text : body.prompt;
      const sabotage = options.sabotage?.(generationRequests + 1);
      if (sabotage) prompt += ` [[${sabotage}]]`;
      const maxTokens: number = kind === 'generate' ? body.sampling_params.max_new_tokens : body.max_tokens;
      if (prompt.includes('[[hang]]')) return;
      const number = ++generationRequests;
      if (options.barrier && number >= options.barrier.from && number < options.barrier.until) {
        held.push(() => respond(res, kind, body, prompt, maxTokens));
        return;
      }
      if (options.barrier && number === options.barrier.until) for (const release of held.splice(0)) release();
      respond(res, kind, body, prompt, maxTokens);
    });
  });

  const respond = (res: http.ServerResponse, kind: 'completion' | 'chat' | 'generate', body: any, prompt: string, maxTokens: number) => {
    {
      if (prompt.includes('[[error]]')) return json(res, 500, { error: { message: 'injected failure', type: 'server_error', param: null, code: 500 } });
      const chunk = (i: number, text: string) => {
        if (kind === 'generate') return { text: tokenText.repeat(i + 1), meta_info: { completion_tokens: i + 1 } };
        if (kind === 'chat') return { id: 'x', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: text }, finish_reason: null }] };
        return { id: 'x', object: 'text_completion', choices: [{ index: 0, text, finish_reason: null }] };
      };
      if (!body.stream) {
        later(tokenDelayMs * maxTokens, () => {
          const text = tokenText.repeat(maxTokens);
          if (kind === 'generate') return json(res, 200, { text, meta_info: { completion_tokens: maxTokens } });
          if (kind === 'chat') return json(res, 200, { choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'length' }] });
          json(res, 200, { choices: [{ index: 0, text, finish_reason: 'length' }] });
        });
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // An empty first chunk (a role-only delta in chat) must not count as a token.
      res.write(`data: ${JSON.stringify(chunk(-1, ''))}\n\n`);
      let i = 0;
      const next = () => {
        if (prompt.includes('[[stall]]') && i === 1) return;
        if (prompt.includes('[[drop]]') && i === 2) return res.socket?.destroy();
        if (i === maxTokens) {
          if (!prompt.includes('[[nodone]]')) res.write('data: [DONE]\n\n');
          return res.end();
        }
        res.write(`data: ${JSON.stringify(chunk(i, tokenText))}\n\n`);
        i++;
        later(tokenDelayMs, next);
      };
      later(tokenDelayMs, next);
    }
  };
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
