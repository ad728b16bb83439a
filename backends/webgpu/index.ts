import type { Backend, BackendOptions } from '../../src/engine/backend.js';
import { GpuContext, type GpuContextOptions } from './gpu.js';
import { WebGpuBackend, type WebGpuTuning } from './webgpu-backend.js';

export { WebGpuBackend, type WebGpuTuning } from './webgpu-backend.js';
export type { GpuContextOptions } from './gpu.js';

/** The webgpu backend on the first adapter Dawn offers; BackendUnavailableError (one line) without one. */
export async function create(_options: BackendOptions = {}, tuning: WebGpuTuning & GpuContextOptions = {}): Promise<Backend> {
  return createWebGpuBackend(tuning);
}

export async function createWebGpuBackend(tuning: WebGpuTuning & GpuContextOptions = {}): Promise<WebGpuBackend> {
  const ctx = await GpuContext.open(tuning);
  return new WebGpuBackend(ctx, tuning);
}
