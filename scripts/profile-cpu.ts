/**
 * `npm run profile:cpu`: where a decode step of the CPU backend goes. Runs a prompt, warm-up
 * steps, then `--steps` greedy decode steps driven through forward() directly,
 * with ORT's per-node profiling on, and prints per step: the wall time, the time inside ORT's
 * session runs, the time in kernels, and the kernels by op type (the lm-head apart), with the
 * weight bytes streamed per second. Host time = wall - session runs; run overhead = session
 * runs - kernels. The load average is printed: the machine may be shared.
 *
 * Options: --model NAME (preset, default llama-3.2-1b), --layers N (fewer decoder layers: a
 * quicker load with the same per-layer profile), --weight-format q8|q4|f32 (q8), --threads N
 * (2), --steps N (32), --prompt N (16), --sequences N (1: sequences stepped together, each
 * its own prompt and pages, as concurrent streams decode), --segment-gib X (weights per ORT session; default: the backend's, 1.25 or 0.625 over 4 GiB of weights),
 * --prefill (profile prefill instead: each measured step is fresh sequences' --prompt tokens),
 * --cpu-gemm auto|ort|native (default auto, the backend's: native for q8 and q4; native's host linears
 * and layer ops are timed apart), --json.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { create as createCpuBackend } from '../backends/cpu/index.js';
import { storedBytes, type WeightFormat } from '../backends/cpu/linear-weights.js';
import { cpuGemmKernels, cpuWeightFormats, type CpuGemmKernel } from '../src/engine/backend.js';
import { hostKernelFor } from '../backends/cpu/host-linears.js';
import { nativeLayerKernels, type LayerKernels } from '../backends/cpu/layer-kernels.js';
import { buildLlamaGraph } from '../src/model/graph.js';
import { DummyWeights } from '../src/model/dummy-weights.js';
import { presets } from '../src/model/presets.js';
import { LockstepSequences } from '../test/support/paged-batch.js';
import { scriptOptions } from './script-options.js';

const args = scriptOptions('profile:cpu', {
  model: { type: 'string', default: 'llama-3.2-1b' },
  layers: { type: 'string' },
  'weight-format': { type: 'string', default: 'q8' },
  threads: { type: 'string', default: '2' },
  steps: { type: 'string', default: '32' },
  prompt: { type: 'string', default: '16' },
  sequences: { type: 'string', default: '1' },
  'segment-gib': { type: 'string' },
  prefill: { type: 'boolean', default: false },
  'cpu-gemm': { type: 'string', default: 'auto' },
  json: { type: 'boolean', default: false },
});

const preset = presets[args.model!];
if (!preset) throw new Error(`--model must be a preset (${Object.keys(presets).join(', ')}), got ${args.model}`);
const format = args['weight-format'] as WeightFormat;
if (!(cpuWeightFormats as readonly string[]).includes(format)) throw new Error(`--weight-format must be one of ${cpuWeightFormats.join(', ')}`);
const config = { ...preset, numLayers: args.layers ? Number(args.layers) : preset.numLayers };
const steps = Number(args.steps);
const promptLength = Number(args.prompt);
const sequences = Number(args.sequences);
if (!Number.isInteger(sequences) || sequences < 1) throw new Error(`--sequences must be a positive integer, got ${args.sequences}`);
const warmup = 4;
if (!(cpuGemmKernels as readonly string[]).includes(args['cpu-gemm']!)) throw new Error(`--cpu-gemm must be one of ${cpuGemmKernels.join(', ')}`);
/** auto resolved as the backend resolves it where the addon is built. */
const cpuGemm: CpuGemmKernel = args['cpu-gemm'] === 'auto' ? (format === 'f32' ? 'ort' : 'native') : (args['cpu-gemm'] as CpuGemmKernel);

/** The host linears' kernel with its time summed (ms), from `measuring` on. */
function timedKernel(threads: number) {
  const kernel = hostKernelFor(format, `--weight-format ${format}`, threads);
  const timed = { measuring: false, ms: 0, calls: 0 };
  const wrapped: typeof kernel = {
    name: kernel.name,
    blockType: kernel.blockType,
    prepare: (blocks, rows, cols) => kernel.prepare(blocks, rows, cols),
    slice: kernel.slice?.bind(kernel),
    run(x, m, w, y) {
      const t = performance.now();
      kernel.run(x, m, w, y);
      if (timed.measuring) {
        timed.ms += performance.now() - t;
        timed.calls++;
      }
    },
  };
  return { kernel: wrapped, timed };
}

/** The addon's layer kernels with each op's time summed (ms), from `measuring` on. */
function timedLayerKernels(threads: number) {
  const kernels = nativeLayerKernels(threads);
  const timed = { measuring: false, ms: new Map<string, number>() };
  const wrapped = { ...kernels } as Record<string, unknown>;
  for (const [op, fn] of Object.entries(kernels)) {
    if (typeof fn !== 'function') continue;
    wrapped[op] = (...args: unknown[]) => {
      const t = performance.now();
      (fn as (...a: unknown[]) => void)(...args);
      if (timed.measuring) timed.ms.set(op, (timed.ms.get(op) ?? 0) + performance.now() - t);
    };
  }
  return { kernels: wrapped as unknown as LayerKernels, timed };
}

interface ProfileEvent {
  cat: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-profile-'));
  const graph = buildLlamaGraph(config);
  const started = performance.now();
  const segmentBytes = args['segment-gib'] ? Number(args['segment-gib']) * 2 ** 30 : undefined;
  const host = cpuGemm === 'native' ? timedKernel(Number(args.threads)) : null;
  const layer = cpuGemm === 'native' ? timedLayerKernels(Number(args.threads)) : null;
  const backend = await createCpuBackend({ threads: Number(args.threads), cpuWeights: format, profilePrefix: join(dir, 'segment'), segmentBytes, cpuGemm, hostKernel: host?.kernel, layerKernels: layer?.kernels });
  await backend.load({ config, graph, weights: new DummyWeights(config, 0) });
  const capacity = promptLength + warmup + steps + 8;
  await backend.allocateKvCache({ numPages: sequences * capacity, pageSize: 1 });
  process.stderr.write(`[profile:cpu] ${backend.description}; loaded in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  const prompt = Array.from({ length: promptLength }, (_, i) => 1000 + i);
  const prompts = Array.from({ length: sequences }, () => prompt);
  const decoding = new LockstepSequences(backend, sequences, capacity, 1);
  let out = await decoding.step(prompts);
  const next = () => (args.prefill ? new LockstepSequences(backend, sequences, capacity, 1).step(prompts) : decoding.step(prompts.map((_, seq) => [out.tokens[seq]!])));
  for (let i = 0; i < warmup; i++) out = await next();
  const loadAverage = loadavg().map((x) => +x.toFixed(2));
  const wall: number[] = [];
  if (host) host.timed.measuring = true;
  if (layer) layer.timed.measuring = true;
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    out = await next();
    wall.push(performance.now() - t);
  }
  await backend.close();

  // Each segment wrote one profile; its runs are in order: the prompt, the warm-up, then the measured steps.
  const byOp = new Map<string, number>();
  let runUs = 0;
  let kernelUs = 0;
  let runs = 0;
  for (const file of readdirSync(dir)) {
    const events = JSON.parse(readFileSync(join(dir, file), 'utf8')) as ProfileEvent[];
    const modelRuns = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
    const measured = modelRuns.slice(1 + warmup);
    runs += measured.length;
    for (const r of measured) runUs += r.dur;
    const first = measured[0]?.ts ?? Infinity;
    for (const e of events) {
      if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < first) continue;
      const op = e.args?.op_name ?? '?';
      const key = op === 'MatMulNBits' || op === 'Gemm' ? (e.name.includes('embed_tokens') || e.name.includes('lm_head') ? `${op} (lm-head)` : `${op} (layers)`) : op;
      byOp.set(key, (byOp.get(key) ?? 0) + e.dur);
      kernelUs += e.dur;
    }
  }
  rmSync(dir, { recursive: true, force: true });
  const perStep = (us: number) => us / 1000 / steps;
  const wallMs = wall.reduce((a, b) => a + b, 0) / steps;
  const linearBytes = graph.ops.reduce((sum, op) => (op.op === 'linear' ? sum + storedBytes(graph.activations[op.out]!.cols, graph.activations[op.x]!.cols, format) : sum), 0);
  const report = {
    model: args.model,
    layers: config.numLayers,
    mode: args.prefill ? `prefill ${promptLength}` : 'decode',
    sequences,
    format,
    threads: Number(args.threads),
    loadAverage,
    sessionRunsPerStep: runs / steps,
    msPerStep: { wall: +wallMs.toFixed(3), sessionRuns: +perStep(runUs).toFixed(3), kernels: +perStep(kernelUs).toFixed(3) },
    tokPerSecond: +(((args.prefill ? promptLength : 1) * sequences * 1000) / wallMs).toFixed(2),
    hostLinears: host ? { msPerStep: +(host.timed.ms / steps).toFixed(3), callsPerStep: host.timed.calls / steps } : null,
    hostLayerOps: layer ? Object.fromEntries([...layer.timed.ms].map(([op, ms]) => [op, +(ms / steps).toFixed(3)])) : null,
    weightGBps: +(linearBytes / (wallMs / 1000) / 1e9).toFixed(2),
    ops: Object.fromEntries([...byOp].sort((a, b) => b[1] - a[1]).map(([op, us]) => [op, +perStep(us).toFixed(3)])),
  };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  console.log(`${args.model} (${config.numLayers} layers), ${format}, ${report.threads} threads, load average ${loadAverage.join(' ')}`);
  const stepName = args.prefill ? `prefill of ${promptLength} tokens` : 'decode step';
  console.log(`${stepName}${sequences > 1 ? `, ${sequences} sequences` : ''}: ${wallMs.toFixed(2)} ms wall (${report.tokPerSecond} tok/s, ${report.weightGBps} GB/s of weights)`);
  console.log(`  in ${report.sessionRunsPerStep} session runs: ${report.msPerStep.sessionRuns} ms; in kernels: ${report.msPerStep.kernels} ms`);
  console.log(`  host between runs: ${(wallMs - report.msPerStep.sessionRuns).toFixed(2)} ms; run overhead (not in kernels): ${(report.msPerStep.sessionRuns - report.msPerStep.kernels).toFixed(2)} ms`);
  if (report.hostLinears) console.log(`  of the host time, host linears (${host!.kernel.name}): ${report.hostLinears.msPerStep} ms in ${report.hostLinears.callsPerStep} calls`);
  for (const [op, ms] of Object.entries(report.hostLayerOps ?? {})) console.log(`  of the host time, ${op}: ${ms} ms`);
  for (const [op, ms] of Object.entries(report.ops)) {
    console.log(`  ${op.padEnd(34)}${ms.toFixed(3).padStart(9)} ms ${((100 * ms) / report.msPerStep.kernels).toFixed(1).padStart(6)}%`);
  }
}

main().catch((e: Error) => {
  console.error(`profile:cpu failed: ${e.stack ?? e.message}`);
  process.exitCode = 1;
});
