/**
 * What /metrics costs a busy server: scrape latency (median, p99) with 256 requests running, the
 * time to render the exposition in-process, and output tokens/s with and without a 20 Hz
 * scraper (llm-d scrapes every 50 ms). The instant backend takes the model's compute out, so
 * the engine, the HTTP server and the metrics are all there is. The load (256 clients) and the
 * scraper run in child processes (the scraper on a plain keep-alive node:http client, as light
 * as a client can be here), so the server process's CPU time per generated token measures the
 * scraper's cost even on a shared machine.
 *
 * Each round is a pair of adjacent phases, without and with the scraper, in alternating order
 * (off-on, on-off, ...) so a drift in throughput over the run does not favour either side. The
 * figure is the median of the per-round ratios, with their spread: on a loaded machine the
 * rounds vary more than the effect, and only many paired rounds say anything.
 *
 *   npm run bench:metrics [-- --running 256] [--seconds 3] [--rounds 10] [--hz 20] [--json]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Agent, get } from 'node:http';
import { once } from 'node:events';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { LlmEngine } from '../src/engine/engine.js';
import { loadModel } from '../src/model/load.js';
import { Rng } from '../src/model/rng.js';
import { silentLogger, startServer, type RunningServer } from '../src/server/index.js';
import { InstantBackend } from '../test/support/instant-backend.js';
import { scriptOptions } from './script-options.js';

const options = scriptOptions('bench:metrics', {
  running: { type: 'string', default: '256' },
  seconds: { type: 'string', default: '3' },
  rounds: { type: 'string', default: '10' },
  hz: { type: 'string', default: '20' },
  json: { type: 'boolean', default: false },
  // Internal: the child processes' roles.
  role: { type: 'string', default: 'server' },
  url: { type: 'string' },
});
const running = Number(options.running);
const phaseMs = Number(options.seconds) * 1000;
const rounds = Number(options.rounds);
const scrapeIntervalMs = 1000 / Number(options.hz);
const promptTokens = 64;
const burstScrapes = 1000;
const maxNewTokens = 512;

const log = (line: string) => {
  if (!options.json) console.log(line);
};

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** Child process: keeps `running` /generate requests in flight until told to stop. */
async function loadProcess(url: string): Promise<void> {
  let stopping = false;
  process.on('message', () => (stopping = true));
  const rng = new Rng(1);
  const client = async () => {
    while (!stopping) {
      const input_ids = Array.from({ length: promptTokens }, () => 1000 + Math.floor(rng.next() * 20000));
      const response = await fetch(`${url}/generate`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ input_ids, sampling_params: { max_new_tokens: maxNewTokens, temperature: 0, ignore_eos: true } }),
      });
      await response.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: running }, client));
  process.disconnect();
}

/** One GET over a keep-alive connection; resolves with the body. */
function scrape(agent: Agent, url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    get(`${url}/metrics`, { agent }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve(Buffer.concat(chunks)));
      response.on('error', reject);
    }).on('error', reject);
  });
}

const runningGauge = Buffer.from('\nvllm:num_requests_running{');

/** The running gauge's value in an exposition, found without decoding the whole text. */
function runningIn(body: Buffer): number {
  const at = body.indexOf(runningGauge);
  if (at < 0) return NaN;
  const valueAt = body.indexOf('} ', at) + 2;
  return Number(body.toString('latin1', valueAt, body.indexOf('\n', valueAt)));
}

/** Child process: scrapes /metrics at the given rate while told to; reports each scrape's latency (ms) and the running gauge it read. */
async function scrapeProcess(url: string): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let scraping = false;
  let latencies: number[] = [];
  let runningSeen: number[] = [];
  let done = false;
  process.on('message', (message: string) => {
    if (message === 'start') scraping = true;
    if (message === 'stop') {
      scraping = false;
      process.send!({ latencies, runningSeen });
      latencies = [];
      runningSeen = [];
    }
    if (message === 'exit') done = true;
    if (message === 'burst') {
      void (async () => {
        for (let i = 0; i < burstScrapes; i++) await scrape(agent, url);
        process.send!('burst done');
      })();
    }
  });
  let next = performance.now();
  while (!done) {
    if (scraping) {
      const started = performance.now();
      const body = await scrape(agent, url);
      latencies.push(performance.now() - started);
      runningSeen.push(runningIn(body));
    }
    next += scrapeIntervalMs;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, next - performance.now())));
  }
  agent.destroy();
  process.disconnect();
}

function child(role: string, url: string): ChildProcess {
  return fork(process.argv[1]!, ['--role', role, '--url', url, '--running', String(running), '--hz', String(1000 / scrapeIntervalMs)], { execArgv: process.execArgv });
}

async function phase(server: RunningServer, scraper: ChildProcess, scrape: boolean) {
  const engine = server.context.engine;
  if (scrape) scraper.send('start');
  const before = engine.stats().generatedTokensTotal;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, phaseMs));
  const tokens = engine.stats().generatedTokensTotal - before;
  const cpu = process.cpuUsage(cpuBefore);
  const seconds = (performance.now() - started) / 1000;
  let scraped: { latencies: number[]; runningSeen: number[] } | undefined;
  if (scrape) {
    const reply = once(scraper, 'message');
    scraper.send('stop');
    scraped = (await reply)[0] as { latencies: number[]; runningSeen: number[] };
  }
  return { tokensPerSecond: tokens / seconds, cpuUsPerToken: (cpu.user + cpu.system) / tokens, tokens, ...scraped };
}

async function main(): Promise<void> {
  const model = loadModel({ modelPath: 'tiny' });
  const engine = await LlmEngine.create(model, new InstantBackend(), {
    maxTotalTokens: running * (promptTokens + maxNewTokens + 16),
    maxRunningRequests: running,
    logger: silentLogger,
  });
  const server = await startServer({ engine, model, port: 0, log: silentLogger, logRequests: false });
  const scraper = child('scrape', server.url);
  // The server's CPU time per scrape, measured on the idle server (warm): what 20 scrapes a second take from serving.
  await new Promise((resolve) => setTimeout(resolve, 500));
  // One burst unmeasured first: the first scrapes pay for compiling the HTTP and metrics paths.
  const warmed = once(scraper, 'message');
  scraper.send('burst');
  await warmed;
  const burstCpu = process.cpuUsage();
  const burstStarted = performance.now();
  const burstDone = once(scraper, 'message');
  scraper.send('burst');
  await burstDone;
  const burstUsage = process.cpuUsage(burstCpu);
  const cpuPerScrapeUs = (burstUsage.user + burstUsage.system) / burstScrapes;
  const idleScrapeMs = (performance.now() - burstStarted) / burstScrapes;
  const load = child('load', server.url);
  // Warm up until every client's request runs.
  const warmupDeadline = performance.now() + 30_000;
  while (engine.stats().runningRequests < running && performance.now() < warmupDeadline) await new Promise((resolve) => setTimeout(resolve, 50));
  await new Promise((resolve) => setTimeout(resolve, 1000));

  const off: number[] = [];
  const on: number[] = [];
  const cpuOff: number[] = [];
  const cpuOn: number[] = [];
  const ratios: number[] = [];
  const cpuRatios: number[] = [];
  const cpuPerScrapeUnderLoad: number[] = [];
  const latencies: number[] = [];
  const runningSeen: number[] = [];
  const loads: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const scraperFirst = round % 2 === 1;
    const first = await phase(server, scraper, scraperFirst);
    const second = await phase(server, scraper, !scraperFirst);
    const [without, withScraper] = scraperFirst ? [second, first] : [first, second];
    off.push(without.tokensPerSecond);
    on.push(withScraper.tokensPerSecond);
    cpuOff.push(without.cpuUsPerToken);
    cpuOn.push(withScraper.cpuUsPerToken);
    ratios.push(withScraper.tokensPerSecond / without.tokensPerSecond);
    cpuRatios.push(withScraper.cpuUsPerToken / without.cpuUsPerToken);
    // The server CPU the scrapes took while requests ran: the extra CPU per token, over the phase's tokens, per scrape.
    cpuPerScrapeUnderLoad.push(((withScraper.cpuUsPerToken - without.cpuUsPerToken) * withScraper.tokens) / withScraper.latencies!.length);
    latencies.push(...withScraper.latencies!);
    runningSeen.push(...withScraper.runningSeen!);
    loads.push(loadavg()[0]!);
    log(
      `round ${round + 1} (${scraperFirst ? 'with first' : 'without first'}): without the scraper ${without.tokensPerSecond.toFixed(0)} tok/s, ${without.cpuUsPerToken.toFixed(2)} CPU µs/token; ` +
        `with it ${withScraper.tokensPerSecond.toFixed(0)} tok/s, ${withScraper.cpuUsPerToken.toFixed(2)} CPU µs/token; ratio ${ratios.at(-1)!.toFixed(3)} (load average ${loadavg().map((l) => l.toFixed(2)).join(' ')})`,
    );
  }
  // Rendering alone, in-process, between steps: what the exposition itself costs (a step runs
  // between two renders, so each renders afresh rather than reusing the previous bytes).
  const renders: number[] = [];
  for (let i = 0; i < 200; i++) {
    await new Promise((resolve) => setTimeout(resolve, 2));
    const started = performance.now();
    server.context.metrics.render();
    renders.push(performance.now() - started);
  }
  const bytes = server.context.metrics.render().length;
  scraper.send('exit');
  load.send('stop');
  await Promise.all([once(scraper, 'exit'), once(load, 'exit')]);
  await server.shutdown(5000);

  const median = (values: number[]) => percentile(values, 50);
  // The per-round ratios: their median is the figure, the quartiles and extremes its spread.
  const spread = (values: number[]) => ({
    ratio: median(values),
    ratioQuartiles: [percentile(values, 25), percentile(values, 75)],
    ratioRange: [Math.min(...values), Math.max(...values)],
  });
  const result = {
    date: new Date().toISOString(),
    running,
    scrapeHz: 1000 / scrapeIntervalMs,
    phaseSeconds: phaseMs / 1000,
    rounds,
    runningAtScrape: { median: median(runningSeen), min: Math.min(...runningSeen) },
    scrapeLatencyMs: { median: median(latencies), p99: percentile(latencies, 99), count: latencies.length },
    renderMs: { median: median(renders), p99: percentile(renders, 99) },
    idleServer: { cpuUsPerScrape: cpuPerScrapeUs, scrapeMs: idleScrapeMs, coreShareAtScrapeRate: (cpuPerScrapeUs * (1000 / scrapeIntervalMs)) / 1e6 },
    exposition: { bytes },
    outputTokensPerSecond: { withoutScraper: median(off), withScraper: median(on), ...spread(ratios) },
    serverCpuUsPerToken: { withoutScraper: median(cpuOff), withScraper: median(cpuOn), ...spread(cpuRatios) },
    serverCpuUsPerScrapeUnderLoad: median(cpuPerScrapeUnderLoad),
    loadAverage: loadavg(),
    loadAveragePerRound: { min: Math.min(...loads), max: Math.max(...loads) },
  };
  if (options.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  log(`/metrics at ${result.runningAtScrape.median} running requests (min ${result.runningAtScrape.min}), ${result.scrapeLatencyMs.count} scrapes at ${result.scrapeHz} Hz:`);
  log(`  scrape latency median ${result.scrapeLatencyMs.median.toFixed(2)} ms, p99 ${result.scrapeLatencyMs.p99.toFixed(2)} ms`);
  log(
    `  idle server: ${result.idleServer.cpuUsPerScrape.toFixed(0)} µs of server CPU per scrape (${result.idleServer.scrapeMs.toFixed(2)} ms each back to back), ` +
      `${(100 * result.idleServer.coreShareAtScrapeRate).toFixed(2)}% of one core at ${result.scrapeHz} Hz`,
  );
  log(`  render in-process median ${result.renderMs.median.toFixed(3)} ms, p99 ${result.renderMs.p99.toFixed(3)} ms (${bytes} bytes)`);
  const showSpread = (r: { ratio: number; ratioQuartiles: number[]; ratioRange: number[] }) =>
    `ratio ${r.ratio.toFixed(3)} (median of ${rounds} paired rounds; quartiles ${r.ratioQuartiles.map((v) => v.toFixed(3)).join('-')}, range ${r.ratioRange.map((v) => v.toFixed(3)).join('-')})`;
  log(
    `output tok/s (median of ${rounds} rounds of two ${phaseMs / 1000} s phases): without scraper ${result.outputTokensPerSecond.withoutScraper.toFixed(0)}, ` +
      `with ${result.outputTokensPerSecond.withScraper.toFixed(0)}; ${showSpread(result.outputTokensPerSecond)}`,
  );
  log(
    `server CPU per output token (median): without scraper ${result.serverCpuUsPerToken.withoutScraper.toFixed(2)} µs, ` +
      `with ${result.serverCpuUsPerToken.withScraper.toFixed(2)} µs; ${showSpread(result.serverCpuUsPerToken)}`,
  );
  log(
    `server CPU per scrape while requests run (median over rounds): ${result.serverCpuUsPerScrapeUnderLoad.toFixed(0)} µs, ` +
      `${((result.serverCpuUsPerScrapeUnderLoad * result.scrapeHz) / 1e4).toFixed(2)}% of one core at ${result.scrapeHz} Hz`,
  );
  log(`load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end, ${result.loadAveragePerRound.min.toFixed(2)}-${result.loadAveragePerRound.max.toFixed(2)} over the rounds (the machine may be shared)`);
}

if (options.role === 'load') await loadProcess(options.url!);
else if (options.role === 'scrape') await scrapeProcess(options.url!);
else await main();
