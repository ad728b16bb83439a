import type http from 'node:http';
import { RequestFailure, requestLines } from './http-lines.js';
import type { BenchRequest, RequestResult } from './types.js';
import { emptyResult } from './types.js';

export const clientBackends = ['sglang', 'vllm', 'sluice', 'sglang-native', 'openai-chat'] as const;
export type ClientBackend = (typeof clientBackends)[number];

export const defaultPorts: Record<ClientBackend, number> = {
  sglang: 30000,
  'sglang-native': 30000,
  sluice: 30000,
  'openai-chat': 30000,
  vllm: 8000,
};

export interface RequestSettings {
  /** e.g. http://127.0.0.1:30000 (no trailing slash) */
  baseUrl: string;
  model: string;
  stream: boolean;
  ignoreEos: boolean;
  /** --extra-request-body, merged into every request body. */
  extraBody: Record<string, unknown>;
  apiKey?: string;
  timeoutMs: number;
  stallTimeoutMs: number;
  agent?: http.Agent;
}

interface Protocol {
  path: string;
  body(request: BenchRequest, settings: RequestSettings): Record<string, unknown>;
  /** The text a parsed chunk (or whole non-streamed response) carries, or null for a chunk without one. */
  text(data: any): string | null;
  /** Whether each chunk's text is everything generated so far (SGLang's /generate) rather than a delta. */
  cumulative: boolean;
}

const completions: Protocol = {
  path: '/v1/completions',
  body: (request, settings) => ({
    model: settings.model,
    prompt: request.prompt,
    temperature: 0.0,
    best_of: 1,
    max_tokens: request.outputLen,
    stream: settings.stream,
    ignore_eos: settings.ignoreEos,
    ...settings.extraBody,
  }),
  text: (data) => choiceField(data, (choice) => choice.text),
  cumulative: false,
};

const chat: Protocol = {
  path: '/v1/chat/completions',
  body: (request, settings) => ({
    model: settings.model,
    messages: [{ role: 'user', content: request.prompt }],
    temperature: 0.0,
    max_tokens: request.outputLen,
    stream: settings.stream,
    ignore_eos: settings.ignoreEos,
    ...settings.extraBody,
  }),
  text: (data) => choiceField(data, (choice) => choice.delta?.content ?? choice.message?.content),
  cumulative: false,
};

const sglangNative: Protocol = {
  path: '/generate',
  body: (request, settings) => ({
    text: request.prompt,
    sampling_params: { temperature: 0.0, max_new_tokens: request.outputLen, ignore_eos: settings.ignoreEos },
    stream: settings.stream,
    ...settings.extraBody,
  }),
  text: (data) => {
    if (typeof data?.text !== 'string') throw new RequestFailure('bad response', `a /generate chunk without "text": ${JSON.stringify(data).slice(0, 200)}`);
    return data.text;
  },
  cumulative: true,
};

const protocols: Record<ClientBackend, Protocol> = {
  sglang: completions,
  vllm: completions,
  sluice: completions,
  'openai-chat': chat,
  'sglang-native': sglangNative,
};

function choiceField(data: any, pick: (choice: any) => unknown): string | null {
  if (data?.error !== undefined) {
    throw new RequestFailure('error in stream', `the server sent an error: ${JSON.stringify(data.error).slice(0, 300)}`);
  }
  if (!Array.isArray(data?.choices)) throw new RequestFailure('bad response', `a chunk without "choices": ${JSON.stringify(data).slice(0, 200)}`);
  if (data.choices.length === 0) return null; // a usage-only chunk
  const text = pick(data.choices[0]);
  return typeof text === 'string' ? text : null;
}

export function endpointUrl(backend: ClientBackend, baseUrl: string): URL {
  return new URL(baseUrl + protocols[backend].path);
}

/**
 * Sends one benchmark request and times it as bench_serving v0.3.0 does: E2E latency is the
 * time of the last line received; chunks with non-empty text are tokens (the first sets TTFT,
 * each later one adds a gap to ITL). Never throws: failures come back with success false.
 */
export async function sendRequest(backend: ClientBackend, request: BenchRequest, settings: RequestSettings): Promise<RequestResult> {
  const protocol = protocols[backend];
  const result = emptyResult(request);
  const headers: Record<string, string> = {};
  if (settings.apiKey) headers.authorization = `Bearer ${settings.apiKey}`;
  let sawDone = false;
  let firstTokenSeen = false;
  let lastTokenTime = 0;
  let generated = '';
  const bodyLines: string[] = [];
  const start = performance.now();

  const onToken = (text: string, now: number) => {
    if (!firstTokenSeen) {
      firstTokenSeen = true;
      result.ttft = now - start;
    } else {
      result.itl.push(now - lastTokenTime);
    }
    lastTokenTime = now;
    generated = protocol.cumulative ? text : generated + text;
  };

  const onStreamLine = (raw: string) => {
    const line = raw.trim();
    if (line === '' || line.startsWith(':')) return;
    const now = performance.now();
    result.latency = now - start;
    const chunk = line.startsWith('data:') ? line.slice(5).trimStart() : line;
    if (chunk === '[DONE]') {
      sawDone = true;
      return;
    }
    let data: unknown;
    try {
      data = JSON.parse(chunk);
    } catch {
      throw new RequestFailure('bad response', `a stream line is not JSON: ${chunk.slice(0, 200)}`);
    }
    const text = protocol.text(data);
    if (text && (!protocol.cumulative || text.length > generated.length)) onToken(text, now);
  };

  try {
    const response = await requestLines(endpointUrl(backend, settings.baseUrl), {
      body: protocol.body(request, settings),
      headers,
      timeoutMs: settings.timeoutMs,
      stallTimeoutMs: settings.stallTimeoutMs,
      agent: settings.agent,
      onLine: settings.stream ? onStreamLine : (line) => bodyLines.push(line),
    });
    if (response.status !== 200) {
      throw new RequestFailure(`HTTP ${response.status}`, `HTTP ${response.status} ${response.statusText}: ${response.errorBody}`.trim());
    }
    if (settings.stream) {
      if (!sawDone) throw new RequestFailure('stream ended early', 'the stream ended without data: [DONE]');
    } else {
      const now = performance.now();
      result.latency = now - start;
      let data: unknown;
      try {
        data = JSON.parse(bodyLines.join('\n'));
      } catch {
        throw new RequestFailure('bad response', `the response is not JSON: ${bodyLines.join('\n').slice(0, 200)}`);
      }
      const text = protocol.text(data);
      if (text) onToken(text, now);
    }
    result.generatedText = generated;
    result.success = true;
  } catch (e) {
    const failure = e instanceof RequestFailure ? e : new RequestFailure('client error', String((e as Error)?.stack ?? e));
    result.success = false;
    result.error = failure.message;
    result.failureReason = failure.reason;
    result.generatedText = generated;
  }
  return result;
}
