/**
 * `npm run bench:cpu`: sluice's CPU backend against llama.cpp (node-llama-cpp, CPU build) on the
 * same random ("dummy") weights, side by side in one invocation.
 *
 * Measures (a) single-stream decode tok/s, (b) total output tok/s with 8 and 32 concurrent
 * streams, (c) prompt processing tok/s for a 512-token prompt. llama.cpp gets the weights as a
 * GGUF F16 file written once to a cache folder. sluice runs as the engine (src/engine: continuous
 * batching, paged KV) over the CPU backend; --direct drives the backend's forward() itself
 * instead (every stream's prompt in one mixed step, then one decode step for all).
 *
 * Options: --json, --model NAME (a preset, default llama-3.2-1b), --threads N (default 2),
 * --decode-tokens N (32), --stream-prompt N (32), --stream-tokens N (16), --prefill N (512),
 * --streams 8,32, --cache-dir DIR, --skip-llama-cpp, --weight-format f32|q8, --direct.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Backend, ForwardBatch } from '../backends/backend.js';
import { create as createCpuBackend } from '../backends/cpu/index.js';
import type { WeightFormat } from '../backends/cpu/linear-weights.js';
import { LlmEngine } from '../src/engine/engine.js';
import { writeGguf } from '../src/model/gguf.js';
import { loadModel, type LoadedModel } from '../src/model/load.js';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    model: { type: 'string', default: 'llama-3.2-1b' },
    threads: { type: 'string', default: '2' },
    'decode-tokens': { type: 'string', default: '32' },
    'stream-prompt': { type: 'string', default: '32' },
    'stream-tokens': { type: 'string', default: '16' },
    prefill: { type: 'string', default: '512' },
    streams: { type: 'string', default: '8,32' },
    'cache-dir': { type: 'string', default: join(tmpdir(), 'sluice-bench') },
    'skip-llama-cpp': { type: 'boolean', default: false },
    'weight-format': { type: 'string' },
    direct: { type: 'boolean', default: false },
  },
});

const positiveInt = (name: string, text: string): number => {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
};
const settings = {
  model: args.model!,
  threads: positiveInt('threads', args.threads!),
  decodeTokens: positiveInt('decode-tokens', args['decode-tokens']!),
  streamPrompt: positiveInt('stream-prompt', args['stream-prompt']!),
  streamTokens: positiveInt('stream-tokens', args['stream-tokens']!),
  prefill: positiveInt('prefill', args.prefill!),
  streams: args.streams!.split(',').map((s) => positiveInt('streams', s)),
};
const decodePrompt = 16;
const log = (message: string) => process.stderr.write(`[bench:cpu] ${message}\n`);

/** The figures of one engine: tok/s for each measure. */
interface Figures {
  decode_1: number;
  prefill_512: number;
  streams: Record<string, number>;
  loadSeconds: number;
}

/** Deterministic token ids in the ordinary-text range of the Llama 3 vocabulary. */
function promptTokens(length: number, seed: number): number[] {
  return Array.from({ length }, (_, i) => 1000 + ((Math.imul(i + 1, 2654435761) ^ Math.imul(seed + 1, 40503)) >>> 0) % 100000);
}

// ---------------------------------------------------------------- sluice (cpu backend)

/** N greedy streams in lockstep through the backend's paged cache, as a continuous-batching step loop. */
async function runStreams(backend: Backend, prompts: number[][], newTokens: number, pageSize: number): Promise<{ seconds: number; firstStepSeconds: number }> {
  const n = prompts.length;
  const pagesPerSeq = Math.ceil((Math.max(...prompts.map((p) => p.length)) + newTokens) / pageSize);
  const lengths = prompts.map(() => 0);
  const pending = prompts.map((p) => [...p]);
  const start = performance.now();
  let firstStepSeconds = 0;
  for (let step = 0; step < newTokens; step++) {
    const tokenIds: number[] = [];
    const positions: number[] = [];
    const slotMapping: number[] = [];
    const queryStart = [0];
    const kvLens: number[] = [];
    const pageTable: number[] = [];
    const pageTableStart = [0];
    for (let s = 0; s < n; s++) {
      for (const token of pending[s]!) {
        const p = lengths[s]!++;
        tokenIds.push(token);
        positions.push(p);
        slotMapping.push((s * pagesPerSeq + Math.floor(p / pageSize)) * pageSize + (p % pageSize));
      }
      queryStart.push(tokenIds.length);
      kvLens.push(lengths[s]!);
      for (let i = 0; i < pagesPerSeq; i++) pageTable.push(s * pagesPerSeq + i);
      pageTableStart.push(pageTable.length);
    }
    const batch: ForwardBatch = {
      tokenIds: Int32Array.from(tokenIds),
      positions: Int32Array.from(positions),
      queryStart: Int32Array.from(queryStart),
      kvLens: Int32Array.from(kvLens),
      pageTable: Int32Array.from(pageTable),
      pageTableStart: Int32Array.from(pageTableStart),
      slotMapping: Int32Array.from(slotMapping),
      sampling: {
        temperature: new Float32Array(n),
        topP: new Float32Array(n).fill(1),
        topK: new Int32Array(n),
        minP: new Float32Array(n),
        random: new Float32Array(n),
        logprobs: new Int32Array(n).fill(-1),
        penalties: null,
      },
    };
    const out = await backend.forward(batch);
    for (let s = 0; s < n; s++) pending[s] = [out.tokens[s]!];
    if (step === 0) firstStepSeconds = (performance.now() - start) / 1000;
  }
  return { seconds: (performance.now() - start) / 1000, firstStepSeconds };
}

/** Greedy request through the engine: wall seconds, and seconds to the first token. */
async function timedRequest(engine: LlmEngine, prompt: number[], maxNewTokens: number) {
  const start = performance.now();
  let first = 0;
  let tokens = 0;
  const request = { promptTokenIds: prompt, params: { maxNewTokens, temperature: 0, ignoreEos: true } };
  for await (const delta of engine.generate(request)) {
    if (tokens === 0 && delta.tokenIds.length > 0) first = performance.now();
    tokens += delta.tokenIds.length;
  }
  return { seconds: (performance.now() - start) / 1000, firstSeconds: (first - start) / 1000, tokens };
}

async function benchSluice(model: LoadedModel): Promise<Figures> {
  const pageSize = 16;
  const started = performance.now();
  const backend = await createCpuBackend({ threads: settings.threads, weightFormat: args['weight-format'] as WeightFormat | undefined });
  const longest = Math.max(settings.prefill, decodePrompt + settings.decodeTokens, settings.streamPrompt + settings.streamTokens);
  const maxStreams = Math.max(1, ...settings.streams);
  const maxTotalTokens = maxStreams * pageSize * Math.ceil((longest + 1) / pageSize);
  if (args.direct) {
    await backend.load(model);
    await backend.allocateKvCache({ numPages: maxTotalTokens / pageSize, pageSize });
  }
  const engine = args.direct ? null : await LlmEngine.create(model, backend, { pageSize, maxTotalTokens, disableRadixCache: true });
  const loadSeconds = (performance.now() - started) / 1000;
  log(`sluice: ${backend.description}; loaded in ${loadSeconds.toFixed(1)} s; ${engine ? 'through the engine' : 'driving forward() directly'}`);
  // Both drivers answer: wall seconds and seconds to the first token, for n greedy streams.
  const run = async (prompts: number[][], newTokens: number) => {
    if (!engine) return runStreams(backend, prompts, newTokens, pageSize);
    const start = performance.now();
    const results = await Promise.all(prompts.map((p) => timedRequest(engine, p, newTokens)));
    return { seconds: (performance.now() - start) / 1000, firstStepSeconds: Math.max(...results.map((r) => r.firstSeconds)) };
  };
  try {
    await run([promptTokens(8, 99)], 2); // warm-up
    const prefill = await run([promptTokens(settings.prefill, 1)], 1);
    const prefill_512 = settings.prefill / prefill.seconds;
    log(`sluice: prefill ${settings.prefill} tokens: ${prefill_512.toFixed(2)} tok/s`);
    const single = await run([promptTokens(decodePrompt, 2)], settings.decodeTokens + 1);
    const decode_1 = settings.decodeTokens / (single.seconds - single.firstStepSeconds);
    log(`sluice: decode 1 stream: ${decode_1.toFixed(2)} tok/s`);
    const streams: Record<string, number> = {};
    for (const n of settings.streams) {
      const prompts = Array.from({ length: n }, (_, s) => promptTokens(settings.streamPrompt, 100 + s));
      const { seconds } = await run(prompts, settings.streamTokens);
      streams[n] = (n * settings.streamTokens) / seconds;
      log(`sluice: ${n} streams: ${streams[n]!.toFixed(2)} tok/s in total`);
    }
    return { decode_1, prefill_512, streams, loadSeconds };
  } finally {
    if (engine) await engine.close();
    else await backend.close();
  }
}

// ---------------------------------------------------------------- llama.cpp (node-llama-cpp)

async function ensureGguf(model: LoadedModel): Promise<string> {
  mkdirSync(args['cache-dir']!, { recursive: true });
  const file = join(args['cache-dir']!, `${model.name}-dummy-seed0-f16.gguf`);
  if (existsSync(file) && statSync(file).size > 0) return file;
  log(`writing ${file} (GGUF F16 of the same dummy weights)`);
  await writeGguf(`${file}.partial`, { config: model.config, tokenizer: model.tokenizer, weights: model.weights }, { dtype: 'f16' });
  renameSync(`${file}.partial`, file);
  return file;
}

async function benchLlamaCpp(model: LoadedModel): Promise<Figures> {
  const file = await ensureGguf(model);
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const started = performance.now();
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const llamaModel = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const loadSeconds = (performance.now() - started) / 1000;
  log(`llama.cpp: loaded ${file} in ${loadSeconds.toFixed(1)} s`);
  type Token = Parameters<typeof llamaModel.detokenize>[0][number];
  const greedy = async (sequence: { evaluate(tokens: Token[], options?: object): AsyncGenerator<Token> }, prompt: number[], count: number) => {
    const start = performance.now();
    let first = 0;
    let produced = 0;
    for await (const token of sequence.evaluate(prompt as Token[], { temperature: 0 })) {
      void token;
      if (produced === 0) first = performance.now();
      if (++produced >= count) break;
    }
    return { seconds: (performance.now() - start) / 1000, firstSeconds: (first - start) / 1000 };
  };
  try {
    const streams: Record<string, number> = {};
    let decode_1 = 0;
    let prefill_512 = 0;
    {
      const context = await llamaModel.createContext({ contextSize: settings.prefill + 64, batchSize: settings.prefill, threads: settings.threads, sequences: 1 });
      const sequence = context.getSequence();
      await greedy(sequence, promptTokens(8, 99), 2); // warm-up
      await sequence.clearHistory();
      const prefill = await greedy(sequence, promptTokens(settings.prefill, 1), 1);
      prefill_512 = settings.prefill / prefill.firstSeconds;
      log(`llama.cpp: prefill ${settings.prefill} tokens: ${prefill_512.toFixed(2)} tok/s`);
      await sequence.clearHistory();
      const single = await greedy(sequence, promptTokens(decodePrompt, 2), settings.decodeTokens + 1);
      decode_1 = settings.decodeTokens / (single.seconds - single.firstSeconds);
      log(`llama.cpp: decode 1 stream: ${decode_1.toFixed(2)} tok/s`);
      await context.dispose();
    }
    for (const n of settings.streams) {
      const perSeq = settings.streamPrompt + settings.streamTokens + 16;
      // contextSize is per sequence: llama.cpp's unified KV cache holds n * perSeq cells.
      const context = await llamaModel.createContext({ contextSize: perSeq, batchSize: Math.max(512, n * settings.streamPrompt), threads: settings.threads, sequences: n });
      const start = performance.now();
      await Promise.all(
        Array.from({ length: n }, (_, s) => greedy(context.getSequence(), promptTokens(settings.streamPrompt, 100 + s), settings.streamTokens)),
      );
      streams[n] = (n * settings.streamTokens) / ((performance.now() - start) / 1000);
      log(`llama.cpp: ${n} streams: ${streams[n]!.toFixed(2)} tok/s in total`);
      await context.dispose();
    }
    return { decode_1, prefill_512, streams, loadSeconds };
  } finally {
    await llamaModel.dispose();
    await llama.dispose();
  }
}

// ---------------------------------------------------------------- report

function machine() {
  const cpuList = cpus();
  let memAvailable = '';
  try {
    memAvailable = /MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? '';
  } catch {}
  return {
    cpu: cpuList[0]?.model ?? 'unknown',
    cores: cpuList.length,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    memoryAvailableGiB: memAvailable ? +(Number(memAvailable) / 2 ** 20).toFixed(1) : null,
    node: process.version,
  };
}

const loadAverage = () => loadavg().map((x) => +x.toFixed(2));

async function main(): Promise<void> {
  const model = loadModel({ modelPath: settings.model, loadFormat: 'dummy' });
  const loadBefore = loadAverage();
  const llamaCpp = args['skip-llama-cpp'] ? null : await benchLlamaCpp(model);
  const sluice = await benchSluice(model);
  const loadAfter = loadAverage();
  const ratio = (a: number, b: number | undefined) => (b ? +(a / b).toFixed(2) : null);
  const ratios = {
    decode_1: ratio(sluice.decode_1, llamaCpp?.decode_1),
    streams_8: ratio(sluice.streams[8] ?? NaN, llamaCpp?.streams[8]),
    streams_32: ratio(sluice.streams[32] ?? NaN, llamaCpp?.streams[32]),
    prefill_512: ratio(sluice.prefill_512, llamaCpp?.prefill_512),
  };
  const report = {
    date: new Date().toISOString(),
    machine: machine(),
    loadAverage: { before: loadBefore, after: loadAfter },
    model: settings.model,
    settings,
    sluice: { backend: 'cpu', driver: args.direct ? 'forward() directly' : 'LlmEngine', ...sluice },
    llamaCpp: llamaCpp && { version: 'node-llama-cpp 3.21.1 (CPU build), GGUF F16', ...llamaCpp },
    ratios,
  };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  const rows: [string, number, number | undefined, number | null][] = [
    ['(a) decode, 1 stream', sluice.decode_1, llamaCpp?.decode_1, ratios.decode_1],
    ...settings.streams.map((n): [string, number, number | undefined, number | null] => [
      `(b) total output, ${n} streams`,
      sluice.streams[n]!,
      llamaCpp?.streams[n],
      ratio(sluice.streams[n]!, llamaCpp?.streams[n]),
    ]),
    [`(c) prefill, ${settings.prefill}-token prompt`, sluice.prefill_512, llamaCpp?.prefill_512, ratios.prefill_512],
  ];
  const m = report.machine;
  console.log(`${settings.model} (dummy weights), ${m.cpu}, ${m.cores} cores, ${settings.threads} threads, load ${loadBefore.join(' ')} -> ${loadAfter.join(' ')}`);
  console.log(`${'tok/s'.padEnd(34)}${'sluice cpu'.padStart(12)}${'llama.cpp'.padStart(12)}${'ratio'.padStart(8)}`);
  for (const [label, a, b, r] of rows) {
    console.log(`${label.padEnd(34)}${a.toFixed(2).padStart(12)}${(b?.toFixed(2) ?? '-').padStart(12)}${(r?.toFixed(2) ?? '-').padStart(8)}`);
  }
}

main().catch((e: Error) => {
  console.error(`bench:cpu failed: ${e.message}`);
  process.exitCode = 1;
});
