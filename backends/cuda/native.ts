import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What the addon in native/ exports (see native/src/addon.cc). */
export interface CudaAddon {
  probe(): DeviceProbe;
  CudaModel: new (device: number, graphCapture: boolean) => NativeModel;
  /** Communicators for cuda ranks on these GPUs (rank r on devices[r]); absent in addons built before it. */
  NcclGroup?: new (devices: Int32Array) => NativeNcclGroup;
}

/**
 * Tensor-parallel cuda ranks in one process (native/src/nccl_group.h): NCCL loaded at run time,
 * one communicator per GPU, and a step that runs every rank at once, one thread per rank.
 */
export interface NativeNcclGroup {
  /** Makes a model (unconfigured, on devices[rank]) that rank; its graph may then hold all_reduce / all_gather ops. */
  attach(model: NativeModel, rank: number): void;
  /** One step on every rank; rank 0's sampled tokens. */
  forward(batch: object): Promise<NativeStepOutput>;
  /** NCCL's version, the file it came from, and the ranks' GPUs. */
  description(): string;
  close(): void;
}

export interface DeviceProbe {
  count: number;
  /** The cudaError_t of cudaGetDeviceCount: 35 no driver, 100 no device, 0 fine. */
  errorCode: number;
  /** Empty when devices exist; otherwise "no CUDA device (...)". */
  message: string;
  devices: { name: string; totalBytes: number; computeCapability: number; multiProcessors: number }[];
}

export interface NativeConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  invFreq: Float64Array;
  /** Per activation: perToken (0/1), cols, dtype (0 f32, 1 bf16), viewOf (-1: own buffer), colOffset. */
  activations: Int32Array;
  /** Per op: kind, a, b, c, d, layer (see compile.ts). */
  ops: Int32Array;
  /** Per weight: rows, cols. */
  weights: Int32Array;
}

export interface NativeStepOutput {
  tokens: Int32Array;
  logprobs: Float32Array | null;
  topK: number;
  topIds?: Int32Array;
  topLogprobs?: Float32Array;
}

/** A step's token masks as the addon reads them (TokenMaskBatch without `ready`). */
export interface NativeTokenMask {
  rowOf: Int32Array;
  words: number;
  bits: Int32Array;
}

export interface NativeModel {
  configure(config: NativeConfig): void;
  /** dtype: 0 f32, 1 bf16, 2 f16 (converted to bf16 on the device). */
  /** rowOffset: where these rows go in the weight (the parts of a fused weight load one by one). */
  setWeight(id: number, bytes: Uint8Array, dtype: number, rowOffset?: number): void;
  /** Generates `rows` rows (all when absent) from rowOffset as one dummy tensor of their own. */
  dummyWeight(id: number, key: number, halfRange: number, offset: number, rowOffset?: number, rows?: number): void;
  /**
   * Rows [rowOffset, rowOffset + rows) generated as a window of a larger dummy tensor of
   * sourceCols columns from (sourceRowStart, sourceColStart): a rank's slice. Absent in older addons.
   */
  dummyWeightWindow?(id: number, key: number, halfRange: number, offset: number, rowOffset: number, rows: number, sourceCols: number, sourceRowStart: number, sourceColStart: number): void;
  readWeight(id: number): Float32Array;
  readActivation(id: number, rows: number): Float32Array;
  writeActivation(id: number, values: Float32Array): void;
  /** The final norm and lm-head over these token rows of the last step's residual stream: f32 logits [rows, vocab]. Absent in addons built before it. */
  headLogits?(rows: Int32Array): Float32Array;
  allocateKv(numPages: number, pageSize: number): void;
  memory(): { freeBytes: number; totalBytes: number };
  forward(batch: object): Promise<NativeStepOutput>;
  /**
   * The first half of a step whose token masks are still being computed: checks the batch and
   * launches its forward pass, resolving once it is queued on the device (before it finishes);
   * batch.sampling.tokenMask is not read. Absent in addons built before it.
   */
  launchForward?(batch: object): Promise<void>;
  /** The second half: the launched step's masks (uploaded behind its forward pass), sampling and read-back. */
  sampleLaunched?(mask: NativeTokenMask | null): Promise<NativeStepOutput>;
  description(): string;
  graphsCaptured(): number;
  close(): void;
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where the built addon is looked for: $SLUICE_CUDA_ADDON, else cmake-js's output folder. */
export function addonPath(): string {
  return process.env.SLUICE_CUDA_ADDON ?? join(repoRoot, 'native', 'build', 'Release', 'sluice_cuda.node');
}

const loaded = new Map<string, { addon: CudaAddon | null; error: string | null }>();

/** Loads the addon (once per path); returns why not when it is missing or fails to load. */
export function loadAddon(path = addonPath()): { addon: CudaAddon | null; error: string | null } {
  let result = loaded.get(path);
  if (result) return result;
  if (!existsSync(path)) {
    result = { addon: null, error: `the CUDA addon is not built (${path} is missing; it is built at install when nvcc is found: node scripts/build-native.mjs)` };
  } else {
    try {
      result = { addon: createRequire(import.meta.url)(path) as CudaAddon, error: null };
    } catch (e) {
      result = { addon: null, error: `the CUDA addon at ${path} failed to load: ${(e as Error).message}` };
    }
  }
  loaded.set(path, result);
  return result;
}
