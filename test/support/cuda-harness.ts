import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { ForwardBatch } from '../../src/engine/backend.js';
import { compileGraph, nativeConfig } from '../../backends/cuda/compile.js';
import { loadAddon, type CudaAddon, type NativeModel } from '../../backends/cuda/native.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { bf16ToF32, f32ToBf16, fromFloat32 } from '../../src/model/dtype.js';
import type { Activation, GraphOp } from '../../src/model/graph.js';
import { greedySampling, pagedBatch } from './paged-batch.js';
import { ropeInverseFrequencies } from '../../src/model/rope.js';

/** Where scripts/build-native.mjs finds a tool: PATH, then (for nvcc) $CUDA_HOME, $CUDA_PATH or /usr/local/cuda. */
export function findTool(name: 'nvcc' | 'cmake'): string | null {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  if (name === 'nvcc') {
    const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH].filter((h): h is string => !!h);
    for (const home of homes.length ? homes : ['/usr/local/cuda']) dirs.push(join(home, 'bin'));
  }
  for (const dir of dirs) if (existsSync(join(dir, name))) return join(dir, name);
  return null;
}

/** The addon and its device, or why GPU tests cannot run here. */
export function cudaForTests(): { addon: CudaAddon | null; gpu: string | null; skipReason: string } {
  const { addon, error } = loadAddon();
  if (!addon) return { addon: null, gpu: null, skipReason: `skipped: ${error}` };
  const probe = addon.probe();
  if (probe.count === 0) return { addon, gpu: null, skipReason: `skipped: ${probe.message}` };
  const d = probe.devices[0]!;
  return { addon, gpu: `${d.name}, sm_${d.computeCapability}`, skipReason: '' };
}

/** Values as the device stores them in bf16. */
export function roundBf16(x: Float32Array): Float32Array {
  return Float32Array.from(x, (v) => bf16ToF32(f32ToBf16(v)));
}

export interface OpGraphSpec {
  config: Pick<LlamaConfig, 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'vocabSize' | 'rmsNormEps' | 'ropeTheta' | 'ropeScaling'>;
  activations: Record<string, Activation>;
  ops: GraphOp[];
  weights: Record<string, { shape: number[]; values: Float32Array }>;
}

/** A custom graph on the addon, to drive single ops and read their buffers back. */
export class OpHarness {
  readonly ids: Map<string, number>;
  private constructor(
    readonly model: NativeModel,
    names: string[],
  ) {
    this.ids = new Map(names.map((n, i) => [n, i]));
  }

  static create(addon: CudaAddon, spec: OpGraphSpec, kv = { numPages: 64, pageSize: 1 }, graphCapture = false): OpHarness {
    const model = new addon.CudaModel(0, graphCapture);
    const compiled = compileGraph({ activations: spec.activations, ops: spec.ops, lmHead: '', layerStart: [] }, (name) => spec.weights[name]?.shape);
    const config = { ...spec.config, eosTokenIds: [], bosTokenId: 0, maxPositionEmbeddings: 1 << 20, tieWordEmbeddings: true, dtype: 'bf16' } as LlamaConfig;
    model.configure(nativeConfig(config, compiled, ropeInverseFrequencies(config)));
    compiled.weights.forEach((w, id) => model.setWeight(id, fromFloat32(spec.weights[w.name]!.values, 'f32'), 0));
    model.allocateKv(kv.numPages, kv.pageSize);
    return new OpHarness(model, compiled.activations.map((a) => a.name));
  }

  write(name: string, values: Float32Array): void {
    this.model.writeActivation(this.ids.get(name)!, values);
  }

  read(name: string, rows: number): Float32Array {
    return this.model.readActivation(this.ids.get(name)!, rows);
  }

  close(): void {
    this.model.close();
  }
}

/** One sequence of `tokenIds` at positions 0..n-1 with page size 1 and slot = position. */
export function singleSequenceBatch(tokenIds: Int32Array): ForwardBatch {
  const iota = Int32Array.from({ length: tokenIds.length }, (_, i) => i);
  return pagedBatch([{ tokens: tokenIds, cached: 0, pages: iota }], 1, greedySampling(1));
}

/** A graph of one op, the sampler over a `logits` activation of `vocab` columns, with a page per sequence. */
export function samplerHarness(addon: CudaAddon, vocab: number, numSeqs: number): OpHarness {
  return OpHarness.create(
    addon,
    {
      config: { hiddenSize: 64, intermediateSize: 128, numLayers: 1, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: vocab, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null },
      activations: { logits: { rows: 'seqs', cols: vocab } },
      ops: [{ op: 'sample', logits: 'logits' }],
      weights: {},
    },
    { numPages: numSeqs, pageSize: 1 },
  );
}
