import type { Backend } from '../../src/engine/backend.js';
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
    throw new BackendUnavailableError(`backend cpu: onnxruntime-node cannot load here (${(e as Error).message})`);
  }
  return new CpuBackend(ort, options);
}
