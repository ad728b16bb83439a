import type { Backend, BackendDescriptor } from '../../src/engine/backend.js';
import { BackendUnavailableError } from '../../src/errors.js';
import { CpuBackend, type CpuBackendOptions, type OrtModule } from './cpu-backend.js';

export type { CpuBackendOptions } from './cpu-backend.js';

/** The CPU backend, or BackendUnavailableError when onnxruntime-node cannot load on this machine. */
export async function create(options: CpuBackendOptions = {}): Promise<Backend> {
  let ort: OrtModule;
  try {
    const mod = (await import('onnxruntime-node')) as OrtModule & { default?: OrtModule };
    ort = mod.default ?? mod;
    if (typeof ort.InferenceSession?.create !== 'function') throw new Error('no InferenceSession in the module');
  } catch (e) {
    throw new BackendUnavailableError('cpu', `onnxruntime-node cannot load (${(e as Error).message})`);
  }
  return new CpuBackend(ort, options);
}

export const cpuBackend = {
  name: 'cpu',
  summary: 'onnxruntime-node on the CPU cores, BF16/F16 checkpoints as 8-bit weights by default',
  create,
} as const satisfies BackendDescriptor<'cpu'>;
