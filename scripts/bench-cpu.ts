/**
 * `npm run bench:cpu`: sluice's CPU backend against llama.cpp (node-llama-cpp, CPU build) on the
 * same random ("dummy") weights, side by side in one invocation: both are loaded, then each
 * measure runs on llama.cpp and right after on sluice, --repeats times in turn, and the medians
 * are compared, with the load average recorded (the machine may be shared: one run of a measure
 * moved by a quarter between minutes on the 2-core VM).
 *
 * Measures (a) single-stream decode tok/s, (b) total output tok/s with 8 and 32 concurrent
 * streams, (c) prompt processing tok/s for a 512-token prompt. llama.cpp gets the same weights in
 * the same bits, as a GGUF file written once to a cache folder: Q8_0 when sluice runs q8, Q4_0
 * for q4 (the very blocks sluice runs: both quantize with backends/cpu/ggml-blocks.ts), F32 for
 * f32; --peer-f16 adds llama.cpp on F16 as an extra column. `--weight-format q8,q4` runs each
 * format in turn in one invocation. sluice runs as the engine (src/engine: continuous batching,
 * paged KV) over the CPU backend; --direct drives the backend's forward() itself instead (every
 * stream's prompt in one mixed step, then one decode step for all).
 *
 * llama.cpp's streams are sequences of one context: node-llama-cpp queues each sequence's next
 * token and decodes all queued ones in one llama_decode. Its default dispatch (on the next event
 * loop turn) often leaves one sequence behind, whose sampling had not finished, so the harness
 * dispatches once every live sequence has queued (or after 20 ms); it counts the sequences per
 * llama_decode and prints them.
 *
 * Options: --json, --model NAME (a preset, default llama-3.2-1b), --threads N (default 2),
 * --decode-tokens N (32), --stream-prompt N (16), --stream-tokens N (32), --prefill N (512),
 * --streams 8,32, --repeats N (3: each measure runs N times on each engine, alternating, and
 * the medians are compared; the run-to-run spread is printed), --cache-dir DIR, --skip-llama-cpp, --weight-format q8|q4|f32 (or a list,
 * default q8), --cpu-gemm auto|ort|native (or a list, default auto, the backend's default: sluice once per kernel, each beside
 * the same llama.cpp figures; native runs q8 and q4, not f32), --peer-f16, --llama-default-dispatch, --direct.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../src/engine/backend.js';
import { create as createCpuBackend } from '../backends/cpu/index.js';
import type { WeightFormat } from '../backends/cpu/linear-weights.js';
import { cpuGemmKernels, cpuWeightFormats, type CpuGemmKernel } from '../src/engine/backend.js';
import { LlmEngine } from '../src/engine/engine.js';
import { writeGguf, type GgufDType } from '../test/support/gguf-writer.js';
import { percentile } from '../src/bench/metrics.js';
import { SeededRandom } from '../src/bench/seeded-random.js';
import { loadModel, type LoadedModel } from '../src/model/load.js';
import { LockstepSequences } from '../test/support/paged-batch.js';
import { scriptOptions } from './script-options.js';

const args = scriptOptions('bench:cpu', {
  json: { type: 'boolean', default: false },
  model: { type: 'string', default: 'llama-3.2-1b' },
  threads: { type: 'string', default: '2' },
  'decode-tokens': { type: 'string', default: '32' },
  'stream-prompt': { type: 'string', default: '16' },
  'stream-tokens': { type: 'string', default: '32' },
  prefill: { type: 'string', default: '512' },
  streams: { type: 'string', default: '8,32' },
  'cache-dir': { type: 'string', default: join(tmpdir(), 'sluice-bench') },
  'skip-llama-cpp': { type: 'boolean', default: false },
  'weight-format': { type: 'string', default: 'q8' },
  'cpu-gemm': { type: 'string', default: 'auto' },
  repeats: { type: 'string', default: '3' },
  'peer-f16': { type: 'boolean', default: false },
  'llama-default-dispatch': { type: 'boolean', default: false },
  direct: { type: 'boolean', default: false },
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
  repeats: positiveInt('repeats', args.repeats!),
  weightFormats: args['weight-format']!.split(',').map((f) => {
    if (!(cpuWeightFormats as readonly string[]).includes(f)) throw new Error(`--weight-format must be one of ${cpuWeightFormats.join(', ')} (or a comma list), got ${JSON.stringify(f)}`);
    return f as WeightFormat;
  }),
  cpuGemms: args['cpu-gemm']!.split(',').map((g) => {
    if (!(cpuGemmKernels as readonly string[]).includes(g)) throw new Error(`--cpu-gemm must be one of ${cpuGemmKernels.join(', ')} (or a comma list), got ${JSON.stringify(g)}`);
    return g as CpuGemmKernel;
  }),
};
if (settings.cpuGemms.every((g) => g === 'native') && !settings.weightFormats.some((f) => f !== 'f32')) throw new Error('--cpu-gemm native runs q8 and q4 weights: add q8 or q4 to --weight-format');
/** The GGUF type that holds the same weights in the same bits as each sluice weight format. */
const peerWeights: Record<WeightFormat, GgufDType> = { f32: 'f32', q8: 'q8_0', q4: 'q4_0' };
const decodePrompt = 16;
const log = (message: string) => process.stderr.write(`[bench:cpu] ${message}\n`);

/** One engine under test: each measure returns tok/s. */
interface Contender {
  loadSeconds: number;
  /** Prompt processing: a prompt of `length` tokens, timed to its first output token. */
  prefill(length: number): Promise<number>;
  /** Decode tok/s of one stream (a 16-token prompt, then `settings.decodeTokens` tokens timed from the first). */
  decodeOne(): Promise<number>;
  /** Output tok/s of `n` concurrent greedy streams, prompt processing included. */
  streams(n: number): Promise<number>;
  close(): Promise<void>;
}

/** Seeded token ids in the ordinary-text range of the Llama 3 vocabulary. */
function promptTokens(length: number, seed: number): number[] {
  const random = new SeededRandom(seed);
  return Array.from({ length }, () => random.integer(1000, 100999));
}

const streamPrompts = (n: number) => Array.from({ length: n }, (_, s) => promptTokens(settings.streamPrompt, 100 + s));

// ---------------------------------------------------------------- sluice (cpu backend)

/** N greedy streams in lockstep through the backend's paged cache (--direct): one mixed prefill step, then decode steps. */
async function runStreams(backend: Backend, prompts: number[][], newTokens: number, pageSize: number): Promise<{ seconds: number; firstSeconds: number }> {
  const pagesPerSeq = Math.ceil((Math.max(...prompts.map((p) => p.length)) + newTokens) / pageSize);
  const streams = new LockstepSequences(backend, prompts.length, pagesPerSeq, pageSize);
  const start = performance.now();
  let firstSeconds = 0;
  let chunks: number[][] = prompts;
  for (let step = 0; step < newTokens; step++) {
    const out = await streams.step(chunks);
    chunks = chunks.map((_, s) => [out.tokens[s]!]);
    if (step === 0) firstSeconds = (performance.now() - start) / 1000;
  }
  return { seconds: (performance.now() - start) / 1000, firstSeconds };
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
  return { seconds: (performance.now() - start) / 1000, firstSeconds: (first - start) / 1000 };
}

async function startSluice(model: LoadedModel, format: WeightFormat, cpuGemm: CpuGemmKernel): Promise<Contender> {
  const pageSize = 16;
  const started = performance.now();
  const backend = await createCpuBackend({ threads: settings.threads, cpuWeights: format, cpuGemm });
  const longest = Math.max(settings.prefill, decodePrompt + settings.decodeTokens, settings.streamPrompt + settings.streamTokens);
  const maxStreams = Math.max(1, ...settings.streams);
  const maxTotalTokens = maxStreams * pageSize * Math.ceil((longest + 1) / pageSize);
  if (args.direct) {
    await backend.load(model);
    await backend.allocateKvCache({ numPages: maxTotalTokens / pageSize, pageSize });
  }
  const engine = args.direct ? null : await LlmEngine.create(model, backend, { pageSize, maxTotalTokens, disableRadixCache: true, logger: { warn() {} } });
  const loadSeconds = (performance.now() - started) / 1000;
  log(`sluice: ${backend.description}; loaded in ${loadSeconds.toFixed(1)} s; ${engine ? 'through the engine' : 'driving forward() directly'}`);
  const run = async (prompts: number[][], newTokens: number) => {
    if (!engine) return runStreams(backend, prompts, newTokens, pageSize);
    const start = performance.now();
    const results = await Promise.all(prompts.map((p) => timedRequest(engine, p, newTokens)));
    return { seconds: (performance.now() - start) / 1000, firstSeconds: Math.max(...results.map((r) => r.firstSeconds)) };
  };
  await run([promptTokens(8, 99)], 2); // warm-up
  return {
    loadSeconds,
    prefill: async (length) => length / (await run([promptTokens(length, 1)], 1)).seconds,
    decodeOne: async () => {
      const r = await run([promptTokens(decodePrompt, 2)], settings.decodeTokens + 1);
      return settings.decodeTokens / (r.seconds - r.firstSeconds);
    },
    streams: async (n) => (n * settings.streamTokens) / (await run(streamPrompts(n), settings.streamTokens)).seconds,
    close: () => (engine ? engine.close() : backend.close()),
  };
}

// ---------------------------------------------------------------- llama.cpp (node-llama-cpp)

async function ensureGguf(model: LoadedModel, dtype: GgufDType): Promise<string> {
  mkdirSync(args['cache-dir']!, { recursive: true });
  // v2: Q8_0/Q4_0 blocks follow ggml's rounding (ggml-blocks.ts); files of other revisions are not reused.
  const file = join(args['cache-dir']!, `${model.name}-dummy-seed0-${dtype}${dtype.startsWith('q') ? '-v2' : ''}.gguf`);
  if (existsSync(file) && statSync(file).size > 0) return file;
  log(`writing ${file} (GGUF ${dtype.toUpperCase()} of the same dummy weights)`);
  await writeGguf(`${file}.partial`, { config: model.config, tokenizer: model.tokenizer, weights: model.weights }, { dtype });
  renameSync(`${file}.partial`, file);
  return file;
}

/** llama.cpp on a GGUF file; `decodeCalls` counts llama_decode calls and the tokens each carried (streams measures). */
async function startLlamaCpp(model: LoadedModel, dtype: GgufDType): Promise<Contender & { decodeCalls: { calls: number; tokens: number } }> {
  const file = await ensureGguf(model, dtype);
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const started = performance.now();
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const llamaModel = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const loadSeconds = (performance.now() - started) / 1000;
  log(`llama.cpp: loaded ${file} in ${loadSeconds.toFixed(1)} s`);
  type Token = Parameters<typeof llamaModel.detokenize>[0][number];
  type Sequence = { evaluate(tokens: Token[], options?: object): AsyncGenerator<Token> };
  type Context = Awaited<ReturnType<typeof llamaModel.createContext>>;
  const decodeCalls = { calls: 0, tokens: 0 };
  let liveSequences = 0;
  const greedy = async (sequence: Sequence, prompt: number[], count: number) => {
    const start = performance.now();
    let first = 0;
    let produced = 0;
    liveSequences++;
    try {
      for await (const token of sequence.evaluate(prompt as Token[], { temperature: 0 })) {
        void token;
        if (produced === 0) first = performance.now();
        if (++produced >= count) break;
      }
    } finally {
      liveSequences--;
    }
    return { seconds: (performance.now() - start) / 1000, firstSeconds: (first - start) / 1000 };
  };
  /**
   * node-llama-cpp internals the harness reads (it has no public hook): the native context's
   * batch calls, to count tokens per llama_decode, and the set of sequences with a queued decode.
   */
  type Internals = { _ctx: Record<string, unknown> & { initBatch(size: number): void }; _queuedDecodeSequenceIds?: Set<number> };
  const countBatches = (context: Context) => {
    const internals = context as unknown as Internals;
    const native = internals._ctx;
    if (typeof native?.initBatch !== 'function') return;
    internals._ctx = new Proxy(native, {
      get(target, key) {
        if (key === 'initBatch') {
          return (size: number) => {
            decodeCalls.calls++;
            decodeCalls.tokens += size;
            return target.initBatch(size);
          };
        }
        const v = target[key as string];
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  };
  /** Dispatches a batch once every live sequence has queued its next token (or after 20 ms). */
  const dispatchWhenAllQueued = (getContext: () => Context | undefined) => (dispatch: () => void) => {
    const deadline = performance.now() + 20;
    const poll = () => {
      const queued = (getContext() as unknown as Internals | undefined)?._queuedDecodeSequenceIds?.size;
      if (queued === undefined || queued >= liveSequences || performance.now() >= deadline) dispatch();
      else setImmediate(poll);
    };
    setImmediate(poll);
  };
  /** A fresh context per measure; contextSize is per sequence (the unified KV cache holds n * contextSize cells). */
  const withContext = async <T>(sequences: number, contextSize: number, batchSize: number, body: (context: Context) => Promise<T>) => {
    let created: Context | undefined;
    const batching = args['llama-default-dispatch'] ? undefined : { dispatchSchedule: dispatchWhenAllQueued(() => created) };
    const context = await llamaModel.createContext({ contextSize, batchSize, threads: settings.threads, sequences, batching });
    created = context;
    countBatches(context);
    try {
      return await body(context);
    } finally {
      await context.dispose();
    }
  };
  await withContext(1, 64, 64, (c) => greedy(c.getSequence(), promptTokens(8, 99), 2)); // warm-up
  return {
    loadSeconds,
    decodeCalls,
    prefill: (length) => withContext(1, length + 64, length, async (c) => length / (await greedy(c.getSequence(), promptTokens(length, 1), 1)).firstSeconds),
    decodeOne: () =>
      withContext(1, decodePrompt + settings.decodeTokens + 64, 512, async (c) => {
        const r = await greedy(c.getSequence(), promptTokens(decodePrompt, 2), settings.decodeTokens + 1);
        return settings.decodeTokens / (r.seconds - r.firstSeconds);
      }),
    streams: (n) =>
      withContext(n, settings.streamPrompt + settings.streamTokens + 16, Math.max(512, n * settings.streamPrompt), async (c) => {
        const start = performance.now();
        decodeCalls.calls = 0;
        decodeCalls.tokens = 0;
        await Promise.all(streamPrompts(n).map((p) => greedy(c.getSequence(), p, settings.streamTokens)));
        const seconds = (performance.now() - start) / 1000;
        // The prompts go in the first call(s); the rest are decode steps of up to n sequences.
        log(`llama.cpp ${n} streams: ${decodeCalls.calls} llama_decode calls for ${decodeCalls.tokens} tokens (${n * settings.streamTokens} generated, ${n * settings.streamPrompt} prompt)`);
        return (n * settings.streamTokens) / seconds;
      }),
    close: async () => {
      await llamaModel.dispose();
      await llama.dispose();
    },
  };
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

const loadAverageNow = () => loadavg().map((x) => +x.toFixed(2));

interface Measure {
  key: string;
  label: string;
  run: (c: Contender) => Promise<number>;
}

interface Figure {
  sluice: number;
  llamaCpp: number | null;
  ratio: number | null;
  /** llama.cpp on F16 weights (--peer-f16) and sluice's ratio to it. */
  llamaCppF16?: number;
  ratioF16?: number;
  loadAverage: number[];
  /** Every repeat's tok/s (the figures above are their medians). */
  runs: { sluice: number[]; llamaCpp: number[] };
}

/** The runs' range, as printed beside a median. */
const spread = (xs: number[]) => (xs.length > 1 ? `[${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)}]` : '');

/** One weight format: sluice in it (once per --cpu-gemm kernel) against llama.cpp on the same blocks, measure by measure. */
async function compareFormat(model: LoadedModel, format: WeightFormat, measures: Measure[]) {
  const peer = peerWeights[format];
  const gemms = format === 'f32' ? settings.cpuGemms.filter((g) => g !== 'native') : settings.cpuGemms;
  if (gemms.length === 0) return [];
  const llamaCpp = args['skip-llama-cpp'] ? null : await startLlamaCpp(model, peer);
  const llamaF16 = args['skip-llama-cpp'] || !args['peer-f16'] ? null : await startLlamaCpp(model, 'f16');
  const sluices: Contender[] = [];
  // Each measure runs on every engine back to back, so a change in the machine's load (other
  // processes share it) hits both sides of a ratio alike.
  const figures: Record<string, Figure>[] = gemms.map(() => ({}));
  const decodeCalls: Record<string, { calls: number; tokens: number }> = {};
  try {
    for (const gemm of gemms) sluices.push(await startSluice(model, format, gemm));
    for (const m of measures) {
      const loadAverage = loadAverageNow();
      // Runs alternate engine by engine, so a change in the machine's load over the repeats
      // reaches every engine's median alike.
      const theirRuns: number[] = [];
      const f16Runs: number[] = [];
      const ourRuns: number[][] = sluices.map(() => []);
      for (let repeat = 0; repeat < settings.repeats; repeat++) {
        if (llamaCpp) theirRuns.push(await m.run(llamaCpp));
        if (llamaCpp && m.key.startsWith('streams_')) decodeCalls[m.key] = { ...llamaCpp.decodeCalls };
        if (llamaF16) f16Runs.push(await m.run(llamaF16));
        for (const [i, sluice] of sluices.entries()) ourRuns[i]!.push(await m.run(sluice));
      }
      const theirs = llamaCpp ? percentile(theirRuns, 50) : null;
      const f16 = llamaF16 ? percentile(f16Runs, 50) : undefined;
      for (const [i, runs] of ourRuns.entries()) {
        const ours = percentile(runs, 50);
        figures[i]![m.key] = { sluice: ours, llamaCpp: theirs, ratio: theirs ? +(ours / theirs).toFixed(2) : null, loadAverage, runs: { sluice: runs, llamaCpp: theirRuns } };
        if (f16 !== undefined) Object.assign(figures[i]![m.key]!, { llamaCppF16: f16, ratioF16: +(ours / f16).toFixed(2) });
        log(
          `${format} (--cpu-gemm ${gemms[i]}) ${m.label}: sluice ${ours.toFixed(2)} tok/s ${spread(runs)}, llama.cpp ${peer.toUpperCase()} ${theirs?.toFixed(2) ?? '-'} tok/s ${spread(theirRuns)}` +
            `${f16 !== undefined ? `, llama.cpp F16 ${f16.toFixed(2)}` : ''} (load ${loadAverage.join(' ')})`,
        );
      }
    }
  } finally {
    for (const sluice of sluices) await sluice.close();
    await llamaCpp?.close();
    await llamaF16?.close();
  }
  return gemms.map((gemm, i) => {
    const ratioOf = (key: string) => figures[i]![key]?.ratio ?? null;
    return {
      sluice: { backend: 'cpu', weights: format, cpuGemm: gemm, driver: args.direct ? 'forward() directly' : 'LlmEngine', loadSeconds: sluices[i]!.loadSeconds },
      peer: { engine: 'llama.cpp', weights: peer.toUpperCase(), version: 'node-llama-cpp 3.21.1 (CPU build)', loadSeconds: llamaCpp?.loadSeconds ?? null, decodeCalls },
      figures: figures[i]!,
      ratios: {
        decode_1: ratioOf('decode_1'),
        streams_8: ratioOf('streams_8'),
        streams_32: ratioOf('streams_32'),
        prefill_512: ratioOf(`prefill_${settings.prefill}`),
      },
    };
  });
}

async function main(): Promise<void> {
  const model = loadModel({ modelPath: settings.model, loadFormat: 'dummy' });
  const measures: Measure[] = [
    { key: 'decode_1', label: '(a) decode, 1 stream', run: (c) => c.decodeOne() },
    ...settings.streams.map((n) => ({ key: `streams_${n}`, label: `(b) total output, ${n} streams`, run: (c: Contender) => c.streams(n) })),
    { key: `prefill_${settings.prefill}`, label: `(c) prefill, ${settings.prefill}-token prompt`, run: (c) => c.prefill(settings.prefill) },
  ];
  const runs = [];
  for (const format of settings.weightFormats) runs.push(...(await compareFormat(model, format, measures)));
  // The first format's comparison at the top level: {"peer": {...}, "ratios": {...}}; every format under "runs".
  const report = { date: new Date().toISOString(), machine: machine(), model: settings.model, settings, ...runs[0]!, runs };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  const m = report.machine;
  console.log(`${settings.model} (dummy weights), ${m.cpu}, ${m.cores} cores, ${settings.threads} threads, ${report.date}`);
  for (const run of runs) {
    const f16 = args['peer-f16'] && !args['skip-llama-cpp'];
    console.log(`\nsluice ${run.sluice.weights} (--cpu-gemm ${run.sluice.cpuGemm}) against llama.cpp ${run.peer.weights}${f16 ? ' (and F16)' : ''}`);
    console.log(
      `${'tok/s'.padEnd(34)}${'sluice cpu'.padStart(12)}${`llama ${run.peer.weights}`.padStart(12)}${'ratio'.padStart(8)}` +
        `${f16 ? `${'llama F16'.padStart(12)}${'ratio'.padStart(8)}` : ''}${'load avg'.padStart(10)}`,
    );
    for (const measure of measures) {
      const f = run.figures[measure.key]!;
      console.log(
        `${measure.label.padEnd(34)}${f.sluice.toFixed(2).padStart(12)}${(f.llamaCpp?.toFixed(2) ?? '-').padStart(12)}` +
          `${(f.ratio?.toFixed(2) ?? '-').padStart(8)}` +
          `${f16 ? `${(f.llamaCppF16?.toFixed(2) ?? '-').padStart(12)}${(f.ratioF16?.toFixed(2) ?? '-').padStart(8)}` : ''}` +
          `${f.loadAverage[0]!.toFixed(2).padStart(10)}`,
      );
    }
    for (const [key, d] of Object.entries(run.peer.decodeCalls)) console.log(`llama.cpp ${key}: ${d.calls} llama_decode calls carried ${d.tokens} tokens`);
  }
}

main().catch((e: Error) => {
  console.error(`bench:cpu failed: ${e.message}`);
  process.exitCode = 1;
});
