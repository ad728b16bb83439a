/**
 * `npm run bench:cpu-load`: how long the CPU backend takes to load a preset with dummy weights
 * (generating them, quantizing them on worker threads, compiling the ORT sessions), and the
 * process's memory: peak RSS (VmHWM), RSS once loaded, and where the peak would have taken a
 * bigger model. Prints wall and CPU time (all threads) and the load average (the machine may be
 * shared); then runs one greedy step, so a broken load cannot pass for a fast one.
 *
 * Options: --model NAME (preset, default llama-3.2-1b), --layers N (fewer decoder layers),
 * --weight-format q8|q4|f32 (q8), --threads N (2), --rss-limit-gib X (stop the process when its
 * RSS passes X GiB, checked every 100 ms: a guard on a shared machine), --segment-gib X (the
 * backend's segmentBytes: weights per ORT session; default: the backend's, 1.25, or 0.625 for
 * models over 4 GiB of weights), --json.
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { create as createCpuBackend } from '../backends/cpu/index.js';
import type { WeightFormat } from '../backends/cpu/linear-weights.js';
import { defaultSegmentBytes } from '../backends/cpu/segment-plan.js';
import { cpuWeightFormats } from '../src/engine/backend.js';
import { buildLlamaGraph } from '../src/model/graph.js';
import { DummyWeights } from '../src/model/dummy-weights.js';
import { presets } from '../src/model/presets.js';
import { SingleSequence } from '../test/support/single-sequence.js';
import { scriptOptions } from './script-options.js';

const args = scriptOptions('bench:cpu-load', {
  model: { type: 'string', default: 'llama-3.2-1b' },
  layers: { type: 'string' },
  'weight-format': { type: 'string', default: 'q8' },
  threads: { type: 'string', default: '2' },
  'rss-limit-gib': { type: 'string' },
  'segment-gib': { type: 'string' },
  json: { type: 'boolean', default: false },
});

const preset = presets[args.model!];
if (!preset) throw new Error(`--model must be a preset (${Object.keys(presets).join(', ')}), got ${args.model}`);
const format = args['weight-format'] as WeightFormat;
if (!(cpuWeightFormats as readonly string[]).includes(format)) throw new Error(`--weight-format must be one of ${cpuWeightFormats.join(', ')}`);
const config = { ...preset, numLayers: args.layers ? Number(args.layers) : preset.numLayers };
const gib = 2 ** 30;

/** VmRSS and VmHWM of this process in bytes. */
function memory(): { rss: number; peak: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

async function main(): Promise<void> {
  const limit = args['rss-limit-gib'] ? Number(args['rss-limit-gib']) * gib : Infinity;
  const guard = setInterval(() => {
    const { rss } = memory();
    if (rss <= limit) return;
    process.stderr.write(`bench:cpu-load: RSS ${(rss / gib).toFixed(2)} GiB passed --rss-limit-gib ${args['rss-limit-gib']}; stopping\n`);
    process.exit(3);
  }, 100);
  guard.unref();
  const loadBefore = loadavg()[0]!;
  const cpuStart = process.cpuUsage();
  const started = performance.now();
  const segmentBytes = args['segment-gib'] ? Number(args['segment-gib']) * gib : undefined;
  const backend = await createCpuBackend({ threads: Number(args.threads), cpuWeights: format, segmentBytes });
  await backend.load({ config, graph: buildLlamaGraph(config), weights: new DummyWeights(config, 0) });
  const wallS = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  const loaded = memory();
  await backend.allocateKvCache({ numPages: 16, pageSize: 1 });
  const token = (await new SingleSequence(backend).step([1000, 1001, 1002, 1003])).tokens[0];
  await backend.close();
  clearInterval(guard);
  const report = {
    model: args.model,
    layers: config.numLayers,
    format,
    threads: Number(args.threads),
    segmentGib: args['segment-gib'] ? Number(args['segment-gib']) : defaultSegmentBytes(buildLlamaGraph(config), format) / gib,
    loadAverage: { before: +loadBefore.toFixed(2), after: +loadavg()[0]!.toFixed(2) },
    loadSeconds: { wall: +wallS.toFixed(1), cpuUser: +(cpu.user / 1e6).toFixed(1), cpuSystem: +(cpu.system / 1e6).toFixed(1) },
    gib: { peakRss: +(loaded.peak / gib).toFixed(2), rssLoaded: +(loaded.rss / gib).toFixed(2) },
    firstToken: token,
  };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  console.log(`${args.model} (${config.numLayers} layers), ${format}, ${report.threads} threads, segments of ${report.segmentGib} GiB, load average ${report.loadAverage.before} -> ${report.loadAverage.after}`);
  console.log(`load: ${report.loadSeconds.wall} s wall, ${report.loadSeconds.cpuUser} s user + ${report.loadSeconds.cpuSystem} s system CPU`);
  console.log(`memory: peak RSS ${report.gib.peakRss} GiB, ${report.gib.rssLoaded} GiB once loaded; first token ${token}`);
}

main().catch((e: Error) => {
  console.error(`bench:cpu-load failed: ${e.stack ?? e.message}`);
  process.exitCode = 1;
});
