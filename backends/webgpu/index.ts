import type { Backend, BackendDescriptor, BackendOptions } from '../../src/engine/backend.js';
import { GpuContext, type GpuContextOptions } from './gpu.js';
import { WebGpuBackend, type WebGpuTuning } from './webgpu-backend.js';

export { WebGpuBackend, type WebGpuTuning } from './webgpu-backend.js';
export type { GpuContextOptions } from './gpu.js';

/** The webgpu backend on the first adapter Dawn offers; BackendUnavailableError (one line) without one. */
export async function create(options: BackendOptions = {}): Promise<Backend> {
  return createWebGpuBackend({ attentionSplitSize: options.webgpuAttentionSplit });
}

/** With the settings tests and benchmarks use beyond BackendOptions (profiling, forced limits). */
export async function createWebGpuBackend(tuning: WebGpuTuning & GpuContextOptions = {}): Promise<WebGpuBackend> {
  const ctx = await GpuContext.open(tuning);
  return new WebGpuBackend(ctx, tuning);
}

export const webgpuBackend = {
  name: 'webgpu',
  summary: 'WGSL compute shaders through Dawn (Vulkan, Metal, D3D12): the development backend, never picked by auto',
  create,
} as const satisfies BackendDescriptor<'webgpu'>;
