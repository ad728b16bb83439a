/**
 * `npm run bench:cpu-options`: the CPU backend under different ORT session options (and segment
 * sizes), side by side in one process. Each variant is a backend of its own over the same dummy
 * weights; then, round after round with the variants' order rotated, each runs a single-stream
 * greedy decode (`--decode-steps` steps after a 16-token prompt, ms per step), the same for
 * `--streams` sequences decoding in one batch (ms per step) and a prefill of `--prefill` tokens
 * (ms to the first token), so a change in the machine's load hits every
 * variant alike. Prints the median of each measure per variant, its ratio to the first variant,
 * and the load average. Also times the setImmediate hop onnxruntime-node puts before every
 * session.run (the run itself then executes synchronously on the calling thread).
 *
 * `default` is the backend as it ships; the others change one thing each on top of it.
 *
 * Options: --model NAME (preset, default llama-3.2-1b), --layers N (8), --weight-format q8|q4|f32
 * (q8), --threads N (2), --variants a,b,... (default: every variant below), --rounds N (5),
 * --decode-steps N (8), --streams N (8; 0 skips it), --prefill N (256; 0 skips it), --json.
 */
import { loadavg } from 'node:os';
import type * as Ort from 'onnxruntime-node';
import { create as createCpuBackend, type CpuBackendOptions } from '../backends/cpu/index.js';
import type { WeightFormat } from '../backends/cpu/linear-weights.js';
import type { Backend } from '../src/engine/backend.js';
import { cpuWeightFormats } from '../src/engine/backend.js';
import { buildLlamaGraph } from '../src/model/graph.js';
import { DummyWeights } from '../src/model/dummy-weights.js';
import { presets } from '../src/model/presets.js';
import { greedySampling, pagedBatch } from '../test/support/paged-batch.js';
import { SingleSequence } from '../test/support/single-sequence.js';
import { scriptOptions } from './script-options.js';

type SessionOptions = Partial<Ort.InferenceSession.SessionOptions>;

/** What each variant changes against the backend's own settings. */
const variants: Record<string, { sessionOptions?: SessionOptions; segmentGib?: number }> = {
  default: {},
  spin: { sessionOptions: { extra: { 'session.intra_op.allow_spinning': '1' } } },
  'no-spin': { sessionOptions: { extra: { 'session.intra_op.allow_spinning': '0' } } },
  'threads-1': { sessionOptions: { intraOpNumThreads: 1 } },
  'block-base-4': { sessionOptions: { extra: { 'session.dynamic_block_base': '4' } } },
  'opt-extended': { sessionOptions: { graphOptimizationLevel: 'extended' } },
  'opt-basic': { sessionOptions: { graphOptimizationLevel: 'basic' } },
  'mem-pattern': { sessionOptions: { enableMemPattern: true } },
  'inter-op-2': { sessionOptions: { executionMode: 'parallel', interOpNumThreads: 2 } },
  'segment-0.3': { segmentGib: 0.3 },
  'segment-0.625': { segmentGib: 0.625 },
  'segment-1.25': { segmentGib: 1.25 },
};

const args = scriptOptions('bench:cpu-options', {
  model: { type: 'string', default: 'llama-3.2-1b' },
  layers: { type: 'string', default: '8' },
  'weight-format': { type: 'string', default: 'q8' },
  threads: { type: 'string', default: '2' },
  variants: { type: 'string', default: Object.keys(variants).join(',') },
  rounds: { type: 'string', default: '5' },
  'decode-steps': { type: 'string', default: '8' },
  streams: { type: 'string', default: '8' },
  prefill: { type: 'string', default: '256' },
  json: { type: 'boolean', default: false },
});

const preset = presets[args.model!];
if (!preset) throw new Error(`--model must be a preset (${Object.keys(presets).join(', ')}), got ${args.model}`);
const format = args['weight-format'] as WeightFormat;
if (!(cpuWeightFormats as readonly string[]).includes(format)) throw new Error(`--weight-format must be one of ${cpuWeightFormats.join(', ')}`);
const names = args.variants!.split(',');
for (const name of names) if (!variants[name]) throw new Error(`--variants: unknown variant ${JSON.stringify(name)} (known: ${Object.keys(variants).join(', ')})`);
const config = { ...preset, numLayers: Number(args.layers) };
const rounds = Number(args.rounds);
const decodeSteps = Number(args['decode-steps']);
const prefill = Number(args.prefill);
const streams = Number(args.streams);
const decodePrompt = 16;
const log = (message: string) => process.stderr.write(`[bench:cpu-options] ${message}\n`);
const load1 = () => +loadavg()[0]!.toFixed(2);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function loaded(name: string): Promise<Backend> {
  const variant = variants[name]!;
  const options: CpuBackendOptions = { threads: Number(args.threads), cpuWeights: format, progress: false, sessionOptions: variant.sessionOptions };
  if (variant.segmentGib) options.segmentBytes = variant.segmentGib * 2 ** 30;
  const backend = await createCpuBackend(options);
  const started = performance.now();
  await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 0) });
  await backend.allocateKvCache({ numPages: Math.max(prefill, Math.max(1, streams) * (decodePrompt + decodeSteps + 2)) + 8, pageSize: 1 });
  log(`${name}: loaded in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return backend;
}

/** ms per greedy decode step after a short prompt (median of the steps). */
async function decodeMs(backend: Backend): Promise<number> {
  const sequence = new SingleSequence(backend);
  let out = await sequence.step(Array.from({ length: decodePrompt }, (_, i) => 1000 + i));
  out = await sequence.step([out.tokens[0]!]);
  const times: number[] = [];
  for (let i = 0; i < decodeSteps; i++) {
    const t = performance.now();
    out = await sequence.step([out.tokens[0]!]);
    times.push(performance.now() - t);
  }
  return median(times);
}

/** ms per decode step of `streams` sequences in one batch (median), after their prompts in one mixed step and one warm-up step. */
async function streamsMs(backend: Backend): Promise<number> {
  const perSeq = decodePrompt + decodeSteps + 2;
  const pages = Array.from({ length: streams }, (_, s) => Array.from({ length: perSeq }, (_, i) => s * perSeq + i));
  const lengths = new Array<number>(streams).fill(0);
  let pending = Array.from({ length: streams }, (_, s) => Array.from({ length: decodePrompt }, (_, i) => 3000 + 97 * s + i));
  const times: number[] = [];
  for (let step = 0; step < decodeSteps + 2; step++) {
    const batch = pagedBatch(pending.map((tokens, s) => ({ tokens, cached: lengths[s]!, pages: pages[s]! })), 1, greedySampling(streams));
    pending.forEach((tokens, s) => (lengths[s] = lengths[s]! + tokens.length));
    const t = performance.now();
    const out = await backend.forward(batch);
    if (step >= 2) times.push(performance.now() - t);
    pending = pending.map((_, s) => [out.tokens[s]!]);
  }
  return median(times);
}

async function prefillMs(backend: Backend): Promise<number> {
  const t = performance.now();
  await new SingleSequence(backend).step(Array.from({ length: prefill }, (_, i) => 2000 + ((i * 7) % 5000)));
  return performance.now() - t;
}

/** µs of one `await` of a setImmediate, the hop onnxruntime-node's run() takes before running. */
async function immediateHopUs(): Promise<number> {
  const n = 2000;
  const t = performance.now();
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
  return ((performance.now() - t) * 1000) / n;
}

async function main(): Promise<void> {
  const loadStart = load1();
  const backends = new Map<string, Backend>();
  for (const name of names) backends.set(name, await loaded(name));
  const decode = new Map<string, number[]>(names.map((n) => [n, []]));
  const prompt = new Map<string, number[]>(names.map((n) => [n, []]));
  const batched = new Map<string, number[]>(names.map((n) => [n, []]));
  const loads: number[] = [];
  for (let round = 0; round < rounds; round++) {
    loads.push(load1());
    const order = names.map((_, i) => names[(i + round) % names.length]!);
    for (const name of order) {
      const backend = backends.get(name)!;
      decode.get(name)!.push(await decodeMs(backend));
      if (streams > 0) batched.get(name)!.push(await streamsMs(backend));
      if (prefill > 0) prompt.get(name)!.push(await prefillMs(backend));
    }
    log(`round ${round + 1}/${rounds} done, load ${load1()}`);
  }
  for (const backend of backends.values()) await backend.close();
  const hopUs = await immediateHopUs();
  const base = names[0]!;
  const rows = names.map((name) => {
    const d = median(decode.get(name)!);
    const p = prefill > 0 ? median(prompt.get(name)!) : NaN;
    return {
      variant: name,
      decodeMs: +d.toFixed(2),
      decodeSamples: decode.get(name)!.map((x) => +x.toFixed(1)),
      decodeVsFirst: +(median(decode.get(base)!) / d).toFixed(3),
      streamsMs: streams > 0 ? +median(batched.get(name)!).toFixed(1) : null,
      streamsVsFirst: streams > 0 ? +(median(batched.get(base)!) / median(batched.get(name)!)).toFixed(3) : null,
      prefillMs: +p.toFixed(1),
      prefillSamples: prompt.get(name)!.map((x) => +x.toFixed(0)),
      prefillVsFirst: prefill > 0 ? +(median(prompt.get(base)!) / p).toFixed(3) : null,
    };
  });
  const report = { model: args.model, layers: config.numLayers, format, threads: Number(args.threads), rounds, decodeSteps, streams, prefill, load: { start: loadStart, rounds: loads, end: load1() }, setImmediateHopUs: +hopUs.toFixed(2), rows };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  console.log(`${args.model} (${config.numLayers} layers), ${format}, ${report.threads} threads, ${rounds} rounds; load average ${loadStart} at start, ${loads.join(' ')} per round, ${report.load.end} at end`);
  console.log(`setImmediate hop before each session.run: ${report.setImmediateHopUs} us`);
  console.log(`variant          decode ms/step (x first)   ${streams}-stream ms/step (x first)   prefill ms (x first)   decode samples | prefill samples`);
  for (const r of rows) {
    console.log(`${r.variant.padEnd(16)} ${r.decodeMs.toFixed(2).padStart(9)} (${r.decodeVsFirst.toFixed(3)})   ${String(r.streamsMs).padStart(9)} (${r.streamsVsFirst?.toFixed(3) ?? '-'})   ${String(r.prefillMs).padStart(9)} (${r.prefillVsFirst?.toFixed(3) ?? '-'})   ${r.decodeSamples.join(' ')} | ${r.prefillSamples.join(' ')}`);
  }
}

main().catch((e: Error) => {
  console.error(`bench:cpu-options failed: ${e.stack ?? e.message}`);
  process.exitCode = 1;
});
