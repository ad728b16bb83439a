/**
 * The null server of `npm run bench:serving-overhead -- --server null`: the most this machine
 * allows with this client. A plain node:http server, forked like the real one, that answers the
 * benchmark's streaming /v1/completions and /v1/chat/completions requests with OpenAI-shaped
 * SSE chunks of the same bytes as sluice's (same ids, fields and token texts, `data: [DONE]` at
 * the end), paced by ONE step clock shared by every stream (the fixed-step backend's device
 * thread, overlapped as the engine overlaps: step N+1 queued while N runs). No tokenizer, no
 * engine, no templates: a stream joins at the next step and gets one token per step.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { StepClock } from '../../test/support/step-clock.js';
import { answerParent } from './measurement-window.js';

export interface NullServerSettings {
  stepMs: number;
  /** Texts of the tokens the fixed-step backend samples (decoded by the parent), so chunks weigh what sluice's weigh. */
  tokenTexts: string[];
  /** Send a stream's tokens every N tokens (the first and the last at once), as `sluice serve --stream-interval`. */
  streamInterval: number;
}

const settings = JSON.parse(process.argv[2]!) as NullServerSettings;
const quotedTexts = settings.tokenTexts.map((text) => JSON.stringify(text));

/** One streaming request: its chunk templates and how far its tokens got. */
class NullStream {
  scheduled = 0;
  sent = 0;
  private unsentText = '';
  private unsentTokens = 0;
  private nextText: number;

  constructor(
    private readonly response: http.ServerResponse,
    private readonly prefix: string,
    private readonly suffix: string,
    private readonly lastSuffix: string,
    readonly outputLen: number,
  ) {
    this.nextText = Math.floor(Math.random() * quotedTexts.length);
  }

  get gone(): boolean {
    return this.response.destroyed;
  }

  /** One token of a finished step: written now if the interval says so. */
  token(): void {
    const text = settings.tokenTexts[this.nextText++ % settings.tokenTexts.length]!;
    this.sent++;
    const last = this.sent === this.outputLen;
    if (settings.streamInterval === 1) {
      const quoted = quotedTexts[(this.nextText - 1) % quotedTexts.length]!;
      this.response.write(`data: ${this.prefix}${quoted}${last ? this.lastSuffix : this.suffix}\n\n`);
    } else {
      this.unsentText += text;
      this.unsentTokens++;
      if (this.sent === 1 || last || this.unsentTokens >= settings.streamInterval) {
        this.response.write(`data: ${this.prefix}${JSON.stringify(this.unsentText)}${last ? this.lastSuffix : this.suffix}\n\n`);
        this.unsentText = '';
        this.unsentTokens = 0;
      }
    }
    if (last) this.response.end('data: [DONE]\n\n');
  }
}

const stepCounter = new Int32Array(new SharedArrayBuffer(4));
const clock = new StepClock(settings.stepMs, stepCounter);
/** Streams that arrived since the last launch; they join the next step. */
const joining: NullStream[] = [];
/** Streams with tokens still to schedule. */
let running: NullStream[] = [];
let looping = false;

interface Step {
  batch: NullStream[];
  ran: Promise<void>;
}

/** Launches a step over every stream with tokens left, or returns null when there is none. */
function launch(): Step | null {
  for (const stream of joining) running.push(stream);
  joining.length = 0;
  if (running.length === 0) return null;
  const batch = running;
  running = [];
  for (const stream of batch) {
    stream.scheduled++;
    if (stream.scheduled < stream.outputLen && !stream.gone) running.push(stream);
  }
  return { batch, ran: clock.step() };
}

async function stepLoop(): Promise<void> {
  looping = true;
  let current = launch();
  while (current) {
    const next = launch();
    await current.ran;
    for (const stream of current.batch) if (!stream.gone) stream.token();
    current = next ?? launch();
  }
  looping = false;
}

function start(response: http.ServerResponse, body: { model?: string; max_tokens?: number }, chat: boolean): void {
  const outputLen = body.max_tokens ?? 16;
  const head = JSON.stringify({ id: `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`, object: chat ? 'chat.completion.chunk' : 'text_completion', created: Math.floor(Date.now() / 1000), model: body.model ?? 'tiny' }).slice(0, -1);
  const prefix = chat ? `${head},"choices":[{"index":0,"delta":{"content":` : `${head},"choices":[{"index":0,"text":`;
  const close = chat ? '}' : '';
  const suffix = `${close},"logprobs":null,"finish_reason":null}]}`;
  const lastSuffix = `${close},"logprobs":null,"finish_reason":"length","matched_stop":null}]}`;
  response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  response.flushHeaders();
  if (chat) response.write(`data: ${head},"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n`);
  joining.push(new NullStream(response, prefix, suffix, lastSuffix, outputLen));
  if (!looping) void stepLoop();
}

const server = http.createServer((request, response) => {
  const chat = request.url === '/v1/chat/completions';
  if (request.method !== 'POST' || (!chat && request.url !== '/v1/completions')) {
    response.writeHead(404).end();
    return;
  }
  const parts: Buffer[] = [];
  request.on('data', (part: Buffer) => parts.push(part));
  request.on('end', () => start(response, JSON.parse(Buffer.concat(parts).toString('utf8')), chat));
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  answerParent(`http://127.0.0.1:${port}`, stepCounter, async () => {
    server.closeAllConnections();
    server.close();
    await clock.close();
  });
});
