/**
 * Serving overhead without a GPU: the real HTTP server over a simulated backend whose every step
 * takes a fixed time (test/support/fixed-step-backend.ts), driven by the project's own bench
 * client (streaming, ShareGPT-shaped prompts, chat and completions mixed) at a fixed number of
 * concurrent streams. A perfect host keeps the device busy: steps per second = 1 / step time.
 *
 *   npm run bench:serving-overhead [-- --json] [--step-ms 5,12] [--streams 64,256,1024]
 *       [--server sluice,null] [--engine-thread main,worker] [--overlap on,off]
 *       [--stream-interval 1,4] [--requests-per-stream 2] [--no-long-prompts] [--cpu-prof-dir DIR]
 *       [--base-tree DIR]
 *
 * The servers, engine threads and overlap settings alternate row by row (same settings side by
 * side). Each row runs a fresh server in a child process (scripts/serving-overhead/server.ts),
 * so the client's CPU time is not spent on the server's event loop; both share this machine's
 * cores. `--server null` adds rows (labelled `null`) of a plain node:http server that streams
 * pre-built chunks of the same bytes on the same step clock and does nothing else
 * (scripts/serving-overhead/null-server.ts): the ceiling this machine and client allow. Each
 * sluice row's efficiency is also printed relative to the null row of the same settings.
 * `--cpu-prof-dir DIR` runs every server process under `node --cpu-prof` (one profile per thread,
 * written into DIR as the server exits; `npm run profile:top -- FILE` lists what dominates).
 * `--base-tree DIR` (a checkout of another commit, e.g. a scratch worktree) adds, before each
 * sluice row, the same row served by DIR's server script (code `base`), for before/after in one run.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sendRequest, type ClientBackend, type RequestSettings } from '../src/bench/client-backends.js';
import { latencySamples, percentile } from '../src/bench/metrics.js';
import { SeededRandom } from '../src/bench/seeded-random.js';
import { firstTurnPairs, sampleShareGptRequests } from '../src/bench/sharegpt.js';
import { synthesizeShareGpt } from '../src/bench/synth-sharegpt.js';
import type { BenchRequest, RequestResult } from '../src/bench/types.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { scriptOptions } from './script-options.js';
import type { ChildMessage, ParentMessage } from './serving-overhead/measurement-window.js';
import type { NullServerSettings } from './serving-overhead/null-server.js';
import type { ServerSettings } from './serving-overhead/server.js';

const options = scriptOptions('bench:serving-overhead', {
  json: { type: 'boolean', default: false },
  'step-ms': { type: 'string', default: '5,12' },
  streams: { type: 'string', default: '64,256,1024' },
  server: { type: 'string', default: 'sluice' },
  'engine-thread': { type: 'string', default: 'main,worker' },
  overlap: { type: 'string', default: 'on' },
  'stream-interval': { type: 'string', default: '1' },
  'requests-per-stream': { type: 'string', default: '2' },
  'no-long-prompts': { type: 'boolean', default: false },
  seed: { type: 'string', default: '1' },
  'cpu-prof-dir': { type: 'string' },
  'base-tree': { type: 'string' },
});
const numbers = (text: string, name: string) =>
  text.split(',').map((s) => {
    const n = Number(s);
    if (!(n > 0)) throw new Error(`--${name} ${text}: give positive numbers`);
    return n;
  });
const stepTimes = numbers(options['step-ms'], 'step-ms');
const streamCounts = numbers(options.streams, 'streams');
const engineThreads = options['engine-thread'].split(',').map((t) => {
  if (t !== 'main' && t !== 'worker') throw new Error(`--engine-thread ${t}: give main, worker or both`);
  return t;
});
const servers = options.server.split(',').map((t) => {
  if (t !== 'sluice' && t !== 'null') throw new Error(`--server ${t}: give sluice, null or both`);
  return t;
});
const overlapSettings = options.overlap.split(',').map((o) => {
  if (o !== 'on' && o !== 'off') throw new Error(`--overlap ${o}: give on, off or both`);
  return o === 'on';
});
const streamIntervals = numbers(options['stream-interval'], 'stream-interval').map((n) => {
  if (!Number.isInteger(n)) throw new Error(`--stream-interval ${n}: give whole numbers of tokens`);
  return n;
});
const requestsPerStream = Number(options['requests-per-stream']);
const seed = Number(options.seed);
/** The long-prompt rows: one chat request with this many tokens of text every longPromptEveryMs, during decode at longPromptStreams. */
const longPromptTokens = 8192;
const longPromptEveryMs = 500;
const longPromptStreams = 256;

export interface Row {
  /** this: this checkout's server; base: --base-tree's. */
  code: 'this' | 'base';
  /** main or worker (sluice's --engine-thread), or null: the null server. */
  engine_thread: string;
  /** Whole-step overlap on (step N+1 launched while step N runs). */
  overlap: boolean;
  /** --stream-interval: tokens per chunk of a stream (its first and last token at once). */
  stream_interval: number;
  streams: number;
  step_ms: number;
  long_prompts: boolean;
  steps_per_s: number;
  ideal_steps_per_s: number;
  efficiency: number;
  /** efficiency over the null server's in the same settings (null when no null row ran). */
  efficiency_vs_null: number | null;
  output_tok_s: number;
  median_itl_ms: number;
  p99_itl_ms: number;
  median_ttft_ms: number;
  p99_ttft_ms: number;
  event_loop_p99_ms: number;
  /** CPU time of the server process (all threads) per output token: host cost that a loaded machine's waiting does not inflate. */
  server_cpu_us_per_token: number;
  /** CPU time of this process (the bench client, parsing every event) per output token: the other half of the machine's work. */
  client_cpu_us_per_token: number;
  /**
   * Where first tokens wait, as means from the server's own histograms: from the route taking
   * the request to its first token leaving (TTFT as the server sees it), of which waiting in the
   * engine's queue. The client's TTFT minus the server's is time before the route took it
   * (accepting, parsing, templating, tokenizing).
   */
  server_mean_ttft_ms: number;
  server_mean_queue_ms: number;
  requests: number;
  failed: number;
  load_avg_1m: number;
}

const log = (line: string) => {
  if (!options.json) process.stdout.write(`${line}\n`);
  else process.stderr.write(`${line}\n`);
};

const tokenizer = Tokenizer.llama3();

/** ShareGPT-shaped requests (synthetic text with ShareGPT's length distribution, filtered as bench_serving does). */
function shareGptRequests(count: number): BenchRequest[] {
  const conversations = synthesizeShareGpt(tokenizer, { numConversations: Math.ceil(count * 1.15) + 16, seed, exactLengths: false });
  const requests = sampleShareGptRequests(firstTurnPairs(conversations), { numPrompts: count }, tokenizer, new SeededRandom(seed));
  if (requests.length < count) throw new Error(`only ${requests.length} of ${count} synthetic prompts passed the ShareGPT filter`);
  return requests;
}

function longPrompt(pool: BenchRequest[]): BenchRequest {
  const parts: string[] = [];
  let tokens = 0;
  for (const r of pool) {
    if (tokens >= longPromptTokens) break;
    parts.push(r.prompt);
    tokens += r.promptLen;
  }
  return { prompt: parts.join('\n\n'), promptLen: tokens, outputLen: 8 };
}

class ServerProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
  ) {}

  /** `tree`: the checkout whose server script runs (default this one). */
  static async start(settings: ServerSettings | NullServerSettings, script: 'server' | 'null-server', tree?: string): Promise<ServerProcess> {
    const entry = tree ? resolve(tree, 'scripts', 'serving-overhead', `${script}.ts`) : fileURLToPath(new URL(`./serving-overhead/${script}.ts`, import.meta.url));
    const profile = options['cpu-prof-dir'] ? ['--cpu-prof', '--cpu-prof-dir', options['cpu-prof-dir']] : [];
    const extra = process.env.SLUICE_BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
    const child = fork(entry, [JSON.stringify(settings)], { cwd: tree, execArgv: ['--import', 'tsx', ...profile, ...extra], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const [message] = (await Promise.race([once(child, 'message'), once(child, 'exit').then(() => [null])])) as [ChildMessage | null];
    if (message?.type !== 'listening') throw new Error('the benchmark server did not start');
    return new ServerProcess(child, message.url);
  }

  send(message: ParentMessage): void {
    this.child.send(message);
  }

  async report(): Promise<Extract<ChildMessage, { type: 'report' }>> {
    this.send({ type: 'report' });
    const [message] = (await once(this.child, 'message')) as [ChildMessage];
    if (message.type !== 'report') throw new Error(`unexpected message ${JSON.stringify(message)}`);
    return message;
  }

  async stop(): Promise<void> {
    this.send({ type: 'stop' });
    await once(this.child, 'exit');
  }
}

function clientSettings(baseUrl: string): Omit<RequestSettings, 'agent'> {
  return { baseUrl, model: 'tiny', stream: true, ignoreEos: true, extraBody: {}, timeoutMs: 900_000, stallTimeoutMs: 300_000 };
}

/**
 * Keeps `streams` requests in flight until all are sent: every other request goes to
 * /v1/completions, the rest to /v1/chat/completions. Timed from the first send to the last answer.
 */
async function mixedRun(baseUrl: string, requests: BenchRequest[], streams: number): Promise<{ results: RequestResult[]; durationMs: number }> {
  const agent = new http.Agent({ keepAlive: true });
  const settings = { ...clientSettings(baseUrl), agent };
  const backendOf = (i: number): ClientBackend => (i % 2 === 0 ? 'sluice' : 'openai-chat');
  const results: RequestResult[] = new Array(requests.length);
  let next = 0;
  const start = performance.now();
  const stream = async () => {
    while (next < requests.length) {
      const i = next++;
      results[i] = await sendRequest(backendOf(i), requests[i]!, settings);
    }
  };
  await Promise.all(Array.from({ length: Math.min(streams, requests.length) }, stream));
  const durationMs = performance.now() - start;
  agent.destroy();
  return { results, durationMs };
}

/** One request of each kind must succeed before the measured window opens. */
async function warmUp(baseUrl: string, request: BenchRequest): Promise<void> {
  for (const backend of ['sluice', 'openai-chat'] as const) {
    const result = await sendRequest(backend, { ...request, outputLen: 4 }, clientSettings(baseUrl));
    if (!result.success) throw new Error(`warm-up ${backend} request failed: ${result.error}`);
  }
}

/** Sends one long-prompt chat request every longPromptEveryMs until stopped; returns how many failed. */
function longPromptSender(baseUrl: string, prompt: BenchRequest): { stop(): Promise<number> } {
  const agent = new http.Agent({ keepAlive: true });
  const sent: Promise<RequestResult>[] = [];
  const timer = setInterval(() => sent.push(sendRequest('openai-chat', prompt, { ...clientSettings(baseUrl), agent })), longPromptEveryMs);
  return {
    async stop() {
      clearInterval(timer);
      const results = await Promise.all(sent);
      agent.destroy();
      return results.filter((r) => !r.success).length;
    },
  };
}

interface Mode {
  engineThread: 'main' | 'worker' | 'null';
  overlap: boolean;
  streamInterval: number;
  /** The sluice server of --base-tree rather than this checkout's. */
  base: boolean;
}

async function measureRow({ engineThread, overlap, streamInterval, base }: Mode, stepMs: number, streams: number, requests: BenchRequest[], long: BenchRequest | null): Promise<Row> {
  const server =
    engineThread === 'null'
      ? await ServerProcess.start({ stepMs, tokenTexts: nullServerTokenTexts(), streamInterval } satisfies NullServerSettings, 'null-server')
      : await ServerProcess.start(
          { stepMs, maxTotalTokens: streams * 2400 + 40_000, contextLength: 16_384, engineThread, overlap, streamInterval } satisfies ServerSettings,
          'server',
          base ? options['base-tree'] : undefined,
        );
  try {
    await warmUp(server.url, requests[0]!);
    server.send({ type: 'reset' });
    const sender = long ? longPromptSender(server.url, long) : null;
    const clientCpu = process.cpuUsage();
    const { results, durationMs } = await mixedRun(server.url, requests, streams);
    const clientCpuUsed = process.cpuUsage(clientCpu);
    const longFailed = (await sender?.stop()) ?? 0;
    const report = await server.report();
    const metrics = engineThread === 'null' ? { ttftMs: NaN, queueMs: NaN } : await histogramMeans(server.url);
    const errors = new Map<string, number>();
    for (const r of results) if (!r.success) errors.set(r.error ?? '?', (errors.get(r.error ?? '?') ?? 0) + 1);
    for (const [error, count] of errors) log(`  ${engineThread} overlap ${overlap ? 'on' : 'off'} ${streams} streams: ${count} failed: ${error.slice(0, 300)}`);
    const s = latencySamples(results);
    const ok = results.filter((r) => r.success);
    const outputTokens = ok.reduce((n, r) => n + r.outputLen, 0);
    const stepsPerS = (report.steps / report.elapsedMs) * 1000;
    const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
    return {
      code: base ? 'base' : 'this',
      engine_thread: engineThread,
      overlap,
      stream_interval: streamInterval,
      streams,
      step_ms: stepMs,
      long_prompts: long !== null,
      steps_per_s: round(stepsPerS, 1),
      ideal_steps_per_s: round(1000 / stepMs, 1),
      efficiency: round(stepsPerS / (1000 / stepMs), 3),
      efficiency_vs_null: null,
      output_tok_s: Math.round((outputTokens / durationMs) * 1000),
      median_itl_ms: round(percentile(s.itl, 50)),
      p99_itl_ms: round(percentile(s.itl, 99)),
      median_ttft_ms: round(percentile(s.ttft, 50)),
      p99_ttft_ms: round(percentile(s.ttft, 99)),
      event_loop_p99_ms: round(report.eventLoopP99Ms),
      server_cpu_us_per_token: round((report.cpuMs * 1000) / Math.max(1, outputTokens), 1),
      client_cpu_us_per_token: round((clientCpuUsed.user + clientCpuUsed.system) / Math.max(1, outputTokens), 1),
      server_mean_ttft_ms: round(metrics.ttftMs, 1),
      server_mean_queue_ms: round(metrics.queueMs, 1),
      requests: results.length,
      failed: results.length - ok.length + longFailed,
      load_avg_1m: round(loadavg()[0]!),
    };
  } finally {
    await server.stop();
  }
}

/**
 * Texts of every 25th token the fixed-step backend can sample (ids 1000-50999 of the Llama 3
 * vocabulary, see the instant backend), decoded here so the null server needs no tokenizer.
 */
function nullServerTokenTexts(): string[] {
  const texts: string[] = [];
  for (let id = 1000; id < 51_000; id += 25) texts.push(tokenizer.decode([id]));
  return texts;
}

/** Means of the server's TTFT and queue-time histograms (sum / count), warm-up requests included. */
async function histogramMeans(baseUrl: string): Promise<{ ttftMs: number; queueMs: number }> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  const mean = (family: string) => (value(`${family}_sum`) / value(`${family}_count`)) * 1000;
  return { ttftMs: mean('vllm:time_to_first_token_seconds'), queueMs: mean('vllm:request_queue_time_seconds') };
}

function formatTable(rows: Row[]): string {
  const header = ['code', 'thread', 'overlap', 'interval', 'streams', 'step ms', 'long', 'steps/s', 'ideal', 'eff', 'vs null', 'out tok/s', 'ITL p50', 'ITL p99', 'TTFT p50', 'TTFT p99', 'srv TTFT', 'queue', 'loop p99', 'cpu us/tok', 'client us/tok', 'failed', 'load'];
  const cells = rows.map((r) => [
    r.code,
    r.engine_thread,
    r.overlap ? 'on' : 'off',
    String(r.stream_interval),
    String(r.streams),
    String(r.step_ms),
    r.long_prompts ? '8K' : '-',
    r.steps_per_s.toFixed(1),
    r.ideal_steps_per_s.toFixed(1),
    `${(r.efficiency * 100).toFixed(1)}%`,
    r.efficiency_vs_null === null ? '-' : `${(r.efficiency_vs_null * 100).toFixed(1)}%`,
    String(r.output_tok_s),
    r.median_itl_ms.toFixed(2),
    r.p99_itl_ms.toFixed(2),
    r.median_ttft_ms.toFixed(1),
    r.p99_ttft_ms.toFixed(1),
    Number.isNaN(r.server_mean_ttft_ms) ? '-' : r.server_mean_ttft_ms.toFixed(1),
    Number.isNaN(r.server_mean_queue_ms) ? '-' : r.server_mean_queue_ms.toFixed(1),
    r.event_loop_p99_ms.toFixed(2),
    r.server_cpu_us_per_token.toFixed(1),
    r.client_cpu_us_per_token.toFixed(1),
    String(r.failed),
    r.load_avg_1m.toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => x.padStart(widths[i]!)).join('  ');
  return [line(header), ...cells.map(line)].join('\n');
}

const rows: Row[] = [];
const requestSets = new Map<number, BenchRequest[]>();
const requestsFor = (streams: number) => {
  let set = requestSets.get(streams);
  if (!set) requestSets.set(streams, (set = shareGptRequests(streams * requestsPerStream)));
  return set;
};
const plan: { streams: number; long: boolean }[] = streamCounts.map((streams) => ({ streams, long: false }));
if (!options['no-long-prompts']) plan.push({ streams: longPromptStreams, long: true });
const long = longPrompt(requestsFor(Math.max(...streamCounts, longPromptStreams)));
log(`serving overhead: tiny preset, fixed-step backend, ${requestsPerStream} ShareGPT-shaped requests per stream, chat and completions mixed, streaming`);
log(`machine: load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} at start`);
// The modes alternate row by row, so a change in the machine's load hits both alike.
// The null row goes first in each group: the sluice rows after it are put against it.
const modes = (streamInterval: number): Mode[] =>
  [...servers]
    .sort((a, b) => (a === 'null' ? -1 : b === 'null' ? 1 : 0))
    .flatMap((server): Mode[] =>
      server === 'null'
        ? [{ engineThread: 'null' as const, overlap: true, streamInterval, base: false }]
        : engineThreads.flatMap((engineThread) =>
            overlapSettings.flatMap((overlap) => (options['base-tree'] ? [true, false] : [false]).map((base) => ({ engineThread, overlap, streamInterval, base }))),
          ),
    );
for (const stepMs of stepTimes) {
  for (const { streams, long: withLong } of plan) {
    for (const streamInterval of streamIntervals) {
      let nullRow: Row | null = null;
      for (const mode of modes(streamInterval)) {
        const row = await measureRow(mode, stepMs, streams, requestsFor(streams), withLong ? long : null);
        if (mode.engineThread === 'null') nullRow = row;
        else if (nullRow) row.efficiency_vs_null = Math.round((row.efficiency / nullRow.efficiency) * 1000) / 1000;
        rows.push(row);
        const [header, line] = formatTable([row]).split('\n');
        if (rows.length === 1) log(header!);
        log(line!);
      }
    }
  }
}
if (options.json) process.stdout.write(`${JSON.stringify({ load_avg: loadavg(), rows })}\n`);
else log(`\n${formatTable(rows)}\nload average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
