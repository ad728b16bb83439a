import type { Backend, BackendDescriptor, BackendOptions } from '../../src/engine/backend.js';
import { BackendUnavailableError } from '../../src/errors.js';
import { CudaBackend } from './cuda-backend.js';
import { loadAddon } from './native.js';

/**
 * Creates the CUDA backend, or throws BackendUnavailableError (so `--backend auto` moves on) when
 * the addon is not built or there is no usable CUDA device.
 */
export async function create(options: BackendOptions = {}): Promise<Backend> {
  const { addon, error } = loadAddon();
  if (!addon) throw new BackendUnavailableError('cuda', error!);
  const probe = addon.probe();
  if (probe.count === 0) throw new BackendUnavailableError('cuda', probe.message);
  const device = options.device ?? 0;
  if (device < 0 || device >= probe.count) {
    throw new BackendUnavailableError('cuda', `device ${device} does not exist (${probe.count} found)`);
  }
  try {
    return new CudaBackend(addon, options);
  } catch (e) {
    throw new BackendUnavailableError('cuda', (e as Error).message);
  }
}

export const cudaBackend = {
  name: 'cuda',
  summary: 'the native CUDA addon: BF16 weights and KV on one NVIDIA GPU, decode steps as CUDA graphs',
  create,
} as const satisfies BackendDescriptor<'cuda'>;

export { CudaBackend } from './cuda-backend.js';
export { loadAddon, addonPath } from './native.js';
