/**
 * Soak test (issue 18 item 23; not part of `npm test`): serves the tiny preset on the cpu backend
 * in a child process and sends it --requests requests over about --seconds: mixed prompt and
 * output lengths, n of 1 to 3, streams the client drops part-way, and requests aborted through
 * /abort_request. Afterwards it checks that nothing runs or waits, that no KV page is held by a
 * request, and that the server's RSS is within 10% of its level after warm-up; it prints the
 * figures and exits 1 when a check fails.
 *
 *   npx tsx scripts/soak.ts [--requests 10000] [--seconds 300] [--concurrency 64] [--backend cpu]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { scriptOptions } from './script-options.js';
import { Rng } from '../src/model/rng.js';

const args = scriptOptions('soak', {
  requests: { type: 'string', default: '10000' },
  seconds: { type: 'string', default: '300' },
  concurrency: { type: 'string', default: '64' },
  backend: { type: 'string', default: 'cpu' },
  seed: { type: 'string', default: '1' },
});
const totalRequests = Number(args.requests);
const targetSeconds = Number(args.seconds);
const concurrency = Number(args.concurrency);
const warmupRequests = Math.min(500, Math.floor(totalRequests / 10));
const rng = new Rng(Number(args.seed));
const int = (n: number) => Math.floor(rng.next() * n);
const words = ['river', 'stone', 'light', 'the', 'of', 'quiet', 'engine', 'paper', 'north', 'seven', 'glass', 'and', 'a', 'slow'];

// Keep-alive connections outlive the client's idle limit (undici's is at most 600 s), so the client
// always closes an idle connection first: with the server closing first, a request sent on the
// connection as it closes is reset (HTTP/1.1's keep-alive race; 4 in 1,000 under load 20).
const serveArgs = ['serve', '--model-path', 'tiny', '--backend', args.backend!, '--port', '0', '--disable-log-requests', '--timeout-keep-alive', '3600'];
const server = spawn(process.execPath, ['bin/sluice.mjs', ...serveArgs], {
  stdio: ['ignore', 'ignore', 'pipe'],
});
let serverLog = '';
server.stderr!.on('data', (chunk: Buffer) => (serverLog += chunk.toString()));
const url = await new Promise<string>((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`the server did not start:\n${serverLog}`)), 120_000);
  server.stderr!.on('data', () => {
    const match = /serving \S+ on (http:\/\/\S+)/.exec(serverLog);
    if (match) {
      clearTimeout(timer);
      resolve(match[1]!);
    }
  });
  server.once('exit', (code) => reject(new Error(`the server exited (${code}):\n${serverLog}`)));
});

function rssMiB(): number {
  const status = readFileSync(`/proc/${server.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/**
 * The server's RSS once it is idle: the least of a few readings after a pause, so that garbage
 * the last requests left (collected at V8's leisure) is not counted as growth, at warm-up or at the end.
 */
async function settledRssMiB(): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, 2000));
  let least = Infinity;
  for (let i = 0; i < 10; i++) {
    least = Math.min(least, rssMiB());
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return least;
}

async function metrics(): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.trim()) continue;
    const space = line.lastIndexOf(' ');
    values.set(line.slice(0, space).replace(/\{.*\}$/, ''), Number(line.slice(space + 1)));
  }
  return values;
}

const outcomes = { completed: 0, disconnected: 0, aborted: 0, failed: 0 };
const failures = new Map<string, number>();

/** `largest`: the largest shapes of the mix at once (longest prompt, n 3, sampled), read to the end. */
async function oneRequest(i: number, largest = false): Promise<void> {
  // Mixed but short, so that ~35 requests/s fit on 2 quiet cores: a tenth have long prompts or outputs.
  const prompt = Array.from({ length: largest ? 301 : 1 + int(int(10) === 0 ? 300 : 30) }, () => words[int(words.length)]).join(' ');
  const maxTokens = largest ? 13 : 1 + int(int(10) === 0 ? 64 : 12);
  const n = largest ? 3 : [1, 1, 1, 2, 3][int(5)]!;
  const kind = largest ? 2 : int(10); // 0: drop the stream part-way; 1: abort through /abort_request; else read to the end
  // Mostly greedy; a fifth sampled with top-k 20.
  const sampling = largest || int(5) === 0 ? { temperature: 0.8, top_k: 20, seed: int(1000) } : { temperature: 0 };
  const controller = new AbortController();
  try {
    if (kind === 1) {
      const rid = `soak-${i}`;
      const answer = fetch(`${url}/generate`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ rid, text: prompt, stream: true, sampling_params: { max_new_tokens: maxTokens, n, ...sampling } }),
      }).then((r) => r.text());
      answer.catch(() => {}); // awaited below; a rejection meanwhile is not unhandled
      await new Promise((resolve) => setTimeout(resolve, int(50)));
      await fetch(`${url}/abort_request`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ rid }) });
      await answer;
      outcomes.aborted++;
      return;
    }
    const response = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: maxTokens, n, stream: true, ...sampling }),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const reader = response.body!.getReader();
    const dropAfter = kind === 0 ? 1 + int(5) : Infinity;
    for (let chunks = 0; ; chunks++) {
      if (chunks >= dropAfter) {
        controller.abort();
        outcomes.disconnected++;
        return;
      }
      const { done } = await reader.read();
      if (done) break;
    }
    outcomes.completed++;
  } catch (e) {
    if (controller.signal.aborted) return;
    outcomes.failed++;
    const cause = (e as Error).cause as { code?: string; message?: string } | undefined;
    const why = `${kind === 1 ? '/generate + /abort_request' : '/v1/completions'}: ${(e as Error).message}${cause ? ` (${cause.code ?? ''} ${cause.message ?? ''})` : ''}`;
    failures.set(why, (failures.get(why) ?? 0) + 1);
  }
}

// Warm-up first reaches the largest steps the mix can make (every slot a sampled n = 3 request
// with the longest prompt): buffers that keep their peak size (onnxruntime's arena, the reused
// logits) then count as the warm-up level, and later growth means a leak.
await Promise.all(Array.from({ length: concurrency }, (_, i) => oneRequest(-1 - i, true)));
const largestWave = outcomes.completed;
outcomes.completed = 0;
const started = Date.now();
const progress = setInterval(() => process.stdout.write(`  ${((Date.now() - started) / 1000).toFixed(0)} s: ${next} sent, ${inFlight.size} in flight, ${JSON.stringify(outcomes)}\n`), 10_000);
const gapMs = (targetSeconds * 1000) / totalRequests;
let next = 0;
let warmRss = 0;
let warmAt = 0;
const inFlight = new Set<Promise<void>>();
while (next < totalRequests) {
  // Paced to spread the requests over --seconds, at most --concurrency in flight.
  const due = started + next * gapMs;
  if (Date.now() < due) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
  while (inFlight.size >= concurrency) await Promise.race(inFlight);
  const p = oneRequest(next++).finally(() => inFlight.delete(p));
  inFlight.add(p);
  if (next === warmupRequests) {
    await Promise.all(inFlight);
    warmRss = await settledRssMiB();
    warmAt = (Date.now() - started) / 1000;
  }
  if (next % 250 === 0) process.stdout.write(`${next} sent, ${((Date.now() - started) / 1000).toFixed(0)} s, RSS ${rssMiB().toFixed(0)} MiB, load ${loadavg()[0]!.toFixed(1)}\n`);
}
await Promise.all(inFlight);
clearInterval(progress);
const elapsed = (Date.now() - started) / 1000;
// Let aborted and dropped requests leave the engine.
let m = await metrics();
for (let i = 0; i < 100 && (m.get('vllm:num_requests_running')! > 0 || m.get('vllm:num_requests_waiting')! > 0); i++) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  m = await metrics();
}
const endRss = await settledRssMiB();
const running = m.get('vllm:num_requests_running')!;
const waiting = m.get('vllm:num_requests_waiting')!;
const heldPages = m.get('sluice:kv_cache_pages_used')!;
const rssChange = (endRss - warmRss) / warmRss;
const health = (await fetch(`${url}/health`)).status;
console.log(`soak: ${totalRequests} requests in ${elapsed.toFixed(0)} s (${(totalRequests / elapsed).toFixed(1)}/s), backend ${args.backend}, tiny preset, ${concurrency} in flight at most`);
console.log(`  before them: ${largestWave} of ${concurrency} requests of the largest shape completed (sampled, n 3, 301 words)`);
console.log(`  outcomes: ${JSON.stringify(outcomes)}${failures.size ? ` failures: ${JSON.stringify(Object.fromEntries(failures))}` : ''}`);
console.log(`  after: running ${running}, waiting ${waiting}, KV pages held by requests ${heldPages} (cached ${m.get('sluice:kv_cache_pages_cached')}), /health ${health}`);
console.log(`  RSS: ${warmRss.toFixed(0)} MiB after warm-up (${warmupRequests} requests, ${warmAt.toFixed(0)} s), ${endRss.toFixed(0)} MiB at the end (${(100 * rssChange).toFixed(1)}%)`);
console.log(`  load average: ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
server.kill('SIGTERM');
const ok = running === 0 && waiting === 0 && heldPages === 0 && Math.abs(rssChange) <= 0.1 && health === 200 && outcomes.failed === 0;
console.log(ok ? 'soak: PASS' : 'soak: FAIL');
process.exit(ok ? 0 : 1);
