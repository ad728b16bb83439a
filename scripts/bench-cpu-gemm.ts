/**
 * `npm run bench:cpu-gemm`: one projection `[M, K] x [K, N]` through ORT's CPU kernels, in the
 * ways the CPU backend could run it, timed side by side (variants alternate round by round) and
 * checked for numerics. Every variant holds the same Q8_0 / Q4_0 blocks (ggml's rules) of the
 * same random weights; `f32` holds those blocks' values dequantized.
 *
 * A variant is `q8|q4|f32`, then any of `-L<n>` (MatMulNBits accuracy_level, default 4: int8
 * activations in blocks), `-nozp` (q8 without explicit zero points), `-noprepack` (the session
 * option session.disable_prepacking), `-spin` (intra-op spinning on; off by default,
 * as the backend runs). `native` is the cpu addon's Q8_0 kernel on the same q8 blocks (int8
 * activations per block of 32 and AVX-512 VNNI dot products, as llama.cpp computes Q8_0 over
 * the blocks as stored); `tiles` is the addon's kernel over the same blocks packed at load into
 * 16-row tiles (AMX above 8 rows where the CPU has it, else VNNI), what `--cpu-gemm
 * native` runs on q8 weights; `q4tiles` the same over the Q4_0 blocks packed into tiles of 4-bit
 * codes (what it runs on q4 weights; compare with `q4`, ORT's 4-bit MatMulNBits).
 * Printed per variant and M: median ms per run, µs per row, GFLOP/s, and the relative RMS
 * error against the exact f32 product of the dequantized weights (`err`) and against the
 * first variant (`vs first`: 0 when the numerics are the same).
 *
 * Options: --k N (2048), --n N (16384: the 1B shape's fused gate/up), --m 1,64,512, --variants
 * (default q8,q8-L1,q4,q4-L1,f32), --matrices N (2: distinct weights, so the L3 cache cannot hold
 * them), --rounds N (5), --threads N (2), --json.
 */
import { loadavg } from 'node:os';
import * as ort from 'onnxruntime-node';
import { ggmlBlockSize, quantizeRows, zeroCode, type GgmlBlockType } from '../backends/cpu/ggml-blocks.js';
import { packCodes } from '../backends/cpu/linear-weights.js';
import { nativeBlocks } from '../backends/cpu/native-blocks.js';
import { DataType, OnnxGraphBuilder } from '../backends/cpu/onnx-builder.js';
import { scriptOptions } from './script-options.js';

const args = scriptOptions('bench:cpu-gemm', {
  k: { type: 'string', default: '2048' },
  n: { type: 'string', default: '16384' },
  m: { type: 'string', default: '1,64,512' },
  variants: { type: 'string', default: 'q8,q8-L1,q4,q4-L1,f32' },
  matrices: { type: 'string', default: '2' },
  rounds: { type: 'string', default: '5' },
  threads: { type: 'string', default: '2' },
  json: { type: 'boolean', default: false },
});

const K = Number(args.k);
const N = Number(args.n);
const ms = args.m!.split(',').map(Number);
const matrices = Number(args.matrices);
const rounds = Number(args.rounds);
const threads = Number(args.threads);
const log = (message: string) => process.stderr.write(`[bench:cpu-gemm] ${message}\n`);
const load1 = () => +loadavg()[0]!.toFixed(2);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Variant {
  name: string;
  format: 'q8' | 'q4' | 'f32' | 'native' | 'tiles' | 'q4tiles';
  level: number;
  zeroPoints: boolean;
  prepack: boolean;
  spin: boolean;
}

function parseVariant(name: string): Variant {
  const [format, ...flags] = name.split('-');
  if (format !== 'q8' && format !== 'q4' && format !== 'f32' && format !== 'native' && format !== 'tiles' && format !== 'q4tiles') {
    throw new Error(`--variants: ${name}: must start with q8, q4, f32, native, tiles or q4tiles`);
  }
  if ((format === 'native' || format === 'tiles' || format === 'q4tiles') && !nativeBlocks) throw new Error(`--variants ${format}: the cpu addon is not built (node scripts/build-native.mjs)`);
  const v: Variant = { name, format, level: 4, zeroPoints: format === 'q8', prepack: true, spin: false };
  for (const flag of flags) {
    if (/^L\d$/.test(flag)) v.level = Number(flag.slice(1));
    else if (flag === 'nozp') v.zeroPoints = false;
    else if (flag === 'noprepack') v.prepack = false;
    else if (flag === 'spin') v.spin = true;
    else throw new Error(`--variants: ${name}: unknown flag ${flag} (L<n>, nozp, noprepack, spin)`);
  }
  return v;
}

/** Deterministic uniform values in [-0.5, 0.5) (a 32-bit LCG: the weights only need to differ). */
function uniform(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  let s = seed >>> 0;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

/** A weight matrix [N, K] as Q8_0 or Q4_0 blocks, and its dequantized f32 values. */
function blocksOf(type: GgmlBlockType, w: Float32Array): { codes: Uint8Array; scales: Float32Array; values: Float32Array } {
  const blocks = { codes: new Uint8Array(N * K), scales: new Float32Array((N * K) / ggmlBlockSize) };
  quantizeRows(type, w, N, K, blocks);
  const values = new Float32Array(N * K);
  const zero = zeroCode[type];
  for (let i = 0; i < values.length; i++) values[i] = (blocks.codes[i]! - zero) * blocks.scales[i >> 5]!;
  return { ...blocks, values };
}

/** One variant's way to compute y for the first m rows of x. */
type Runner = (x: Float32Array, m: number) => Promise<Float32Array>;

async function session(v: Variant, w: Float32Array): Promise<{ run: Runner; exact: Float32Array }> {
  if (v.format === 'native') {
    const q = blocksOf('q8_0', w);
    const y = new Float32Array(Math.max(...ms) * N);
    const run: Runner = async (x, m) => {
      nativeBlocks!.q8Gemm(x, m, K, q.codes, q.scales, N, y, threads);
      return y.subarray(0, m * N);
    };
    return { run, exact: q.values };
  }
  if (v.format === 'tiles') {
    const q = blocksOf('q8_0', w);
    const rows = Math.ceil(N / 16) * 16;
    const packed = { codes: new Int8Array(rows * K), scales: new Uint16Array((rows * K) / ggmlBlockSize) };
    nativeBlocks!.packQ8Tiles(q.codes, q.scales, N, K, packed.codes, packed.scales);
    const y = new Float32Array(Math.max(...ms) * N);
    const run: Runner = async (x, m) => {
      nativeBlocks!.q8TilesGemm(x, m, K, packed.codes, packed.scales, N, y, threads);
      return y.subarray(0, m * N);
    };
    return { run, exact: q.values };
  }
  if (v.format === 'q4tiles') {
    const q = blocksOf('q4_0', w);
    const rows = Math.ceil(N / 16) * 16;
    const packed = { codes: new Uint8Array((rows * K) / 2), scales: new Uint16Array((rows * K) / ggmlBlockSize) };
    nativeBlocks!.packQ4Tiles(q.codes, q.scales, N, K, packed.codes, packed.scales);
    const y = new Float32Array(Math.max(...ms) * N);
    const run: Runner = async (x, m) => {
      nativeBlocks!.q4TilesGemm(x, m, K, packed.codes, packed.scales, N, y, threads);
      return y.subarray(0, m * N);
    };
    return { run, exact: q.values };
  }
  const b = new OnnxGraphBuilder();
  const x = b.input('x', DataType.FLOAT, ['M', K]);
  let exact: Float32Array;
  if (v.format === 'f32') {
    exact = blocksOf('q8_0', w).values;
    const weight = b.initializer('w', DataType.FLOAT, [N, K], exact);
    b.node('Gemm', [x, weight], { transB: 1 }, ['y']);
  } else {
    const type: GgmlBlockType = v.format === 'q8' ? 'q8_0' : 'q4_0';
    const bits = v.format === 'q8' ? 8 : 4;
    const q = blocksOf(type, w);
    exact = q.values;
    const blocksPerRow = K / ggmlBlockSize;
    const inputs = [x, b.initializer('w', DataType.UINT8, [N, blocksPerRow, (ggmlBlockSize * bits) / 8], packCodes(q.codes, bits)), b.initializer('s', DataType.FLOAT, [N * blocksPerRow], q.scales)];
    if (v.zeroPoints) {
      const zp = bits === 8 ? new Uint8Array(N * blocksPerRow).fill(128) : new Uint8Array(Math.ceil((N * blocksPerRow) / 2)).fill(0x88);
      inputs.push(b.initializer('zp', DataType.UINT8, [zp.length], zp));
    }
    b.node('MatMulNBits', inputs, { K, N, bits, block_size: ggmlBlockSize, accuracy_level: v.level }, ['y'], 'com.microsoft');
  }
  b.output('y', DataType.FLOAT, ['M', N]);
  const { bytes, externalData } = b.encode();
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    externalData,
    extra: { session: { disable_prepacking: v.prepack ? '0' : '1', intra_op: { allow_spinning: v.spin ? '1' : '0' } } },
  });
  const run: Runner = async (x, m) => (await session.run({ x: new ort.Tensor('float32', x.subarray(0, m * K), [m, K]) })).y!.data as Float32Array;
  return { run, exact };
}

/** x @ w^T in f64, for `rows` rows. */
function reference(x: Float32Array, w: Float32Array, rows: number): Float64Array {
  const out = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++) {
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += x[r * K + k]! * w[n * K + k]!;
      out[r * N + n] = sum;
    }
  }
  return out;
}

function relativeRms(a: ArrayLike<number>, b: ArrayLike<number>, length: number): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

async function main(): Promise<void> {
  const variants = args.variants!.split(',').map(parseVariant);
  const weights = Array.from({ length: matrices }, (_, i) => uniform(N * K, 17 + i));
  const sessions = new Map<string, Runner[]>();
  const exacts = new Map<string, Float32Array>();
  for (const v of variants) {
    const t = performance.now();
    const made = [];
    for (const [i, w] of weights.entries()) {
      const { run, exact } = await session(v, w);
      made.push(run);
      if (i === 0) exacts.set(v.name, exact);
    }
    sessions.set(v.name, made);
    log(`${v.name}: ${matrices} sessions in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const maxM = Math.max(...ms);
  const input = uniform(maxM * K, 99);
  // Numerics on the first matrix, 4 rows.
  const checkRows = Math.min(4, maxM);
  const outputs = new Map<string, Float32Array>();
  for (const v of variants) {
    outputs.set(v.name, (await sessions.get(v.name)![0]!(input, checkRows)).slice());
  }
  const first = variants[0]!.name;
  const errors = new Map(variants.map((v) => [v.name, { err: relativeRms(outputs.get(v.name)!, reference(input, exacts.get(v.name)!, checkRows), checkRows * N), vsFirst: relativeRms(outputs.get(v.name)!, outputs.get(first)!, checkRows * N) }]));
  const times = new Map<string, number[]>();
  const loads: number[] = [];
  for (let round = 0; round < rounds; round++) {
    loads.push(load1());
    for (const m of ms) {
      const order = variants.map((_, i) => variants[(i + round) % variants.length]!);
      for (const v of order) {
        for (const run of sessions.get(v.name)!) {
          const t = performance.now();
          await run(input, m);
          const key = `${v.name}@${m}`;
          if (!times.has(key)) times.set(key, []);
          times.get(key)!.push(performance.now() - t);
        }
      }
    }
    log(`round ${round + 1}/${rounds}, load ${load1()}`);
  }
  const rows = variants.flatMap((v) =>
    ms.map((m) => {
      const t = median(times.get(`${v.name}@${m}`)!);
      return { variant: v.name, m, ms: +t.toFixed(2), usPerRow: +((t * 1000) / m).toFixed(1), gflops: +((2 * m * K * N) / (t / 1000) / 1e9).toFixed(1), err: +errors.get(v.name)!.err.toExponential(2), vsFirst: +errors.get(v.name)!.vsFirst.toExponential(2) };
    }),
  );
  const report = { k: K, n: N, matrices, rounds, threads, load: { rounds: loads, end: load1() }, rows };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  console.log(`[M, ${K}] x [${K}, ${N}], ${threads} threads, ${matrices} matrices, ${rounds} rounds; load average ${loads.join(' ')}, ${report.load.end} at end`);
  console.log('variant             M        ms    us/row  GFLOP/s       err   vs first');
  for (const r of rows) console.log(`${r.variant.padEnd(16)} ${String(r.m).padStart(4)} ${r.ms.toFixed(2).padStart(9)} ${r.usPerRow.toFixed(1).padStart(9)} ${r.gflops.toFixed(1).padStart(8)} ${r.err.toExponential(2).padStart(9)} ${r.vsFirst.toExponential(2).padStart(10)}`);
}

main().catch((e: Error) => {
  console.error(`bench:cpu-gemm failed: ${e.stack ?? e.message}`);
  process.exitCode = 1;
});
