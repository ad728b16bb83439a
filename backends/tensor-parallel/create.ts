import { availableParallelism } from 'node:os';
import type { Backend, BackendOptions } from '../../src/engine/backend.js';
import { UserError } from '../../src/errors.js';
import { loadAddon } from '../cuda/native.js';
import { CudaRanksBackend } from './cuda-ranks.js';
import { planGpuRanks } from './gpu-ranks.js';
import { TensorParallelBackend } from './tensor-parallel-backend.js';

/** Backends whose ranks can run here; the others get a one-line refusal naming what they lack. */
export const tensorParallelBackends = ['ref', 'cpu', 'cuda'] as const;

/**
 * `--tp-size N` (N > 1) over the named backend (or `auto`), or a UserError in one line. cpu ranks
 * share the cores (each gets an equal part unless --threads says how many); cuda ranks use GPUs
 * baseGpuId .. baseGpuId + tpSize - 1 (SGLang's --base-gpu-id), one rank per GPU.
 */
export async function createTensorParallelBackend(name: string, tpSize: number, options: BackendOptions = {}): Promise<Backend> {
  if (!Number.isInteger(tpSize) || tpSize < 1) throw new UserError(`--tp-size ${tpSize}: give a positive whole number of ranks`);
  const baseGpuId = options.device ?? 0;
  if (name === 'ref') return new TensorParallelBackend('ref', tpSize);
  if (name === 'cpu') {
    const threads = options.threads ?? Math.max(1, Math.floor(availableParallelism() / tpSize));
    return new TensorParallelBackend('cpu', tpSize, { threads, cpuWeights: options.cpuWeights, cpuGemm: options.cpuGemm });
  }
  if (name === 'cuda' || name === 'auto') {
    const gpus = cudaDeviceCount();
    if (name === 'cuda' || gpus.count > 0) {
      const devices = planGpuRanks(tpSize, gpus.count, baseGpuId, gpus.why);
      const { addon } = loadAddon();
      if (!addon?.NcclGroup) throw new UserError(`--tp-size ${tpSize}: the CUDA addon predates tensor-parallel ranks; rebuild it (node scripts/build-native.mjs)`);
      return new CudaRanksBackend(addon, devices, options);
    }
    throw new UserError(`--tp-size ${tpSize}: no CUDA GPU here; tensor-parallel ranks run on --backend ref|cpu`);
  }
  throw new UserError(`--tp-size ${tpSize}: the ${name} backend cannot run tensor-parallel ranks yet; --backend ${tensorParallelBackends.join('|')} can`);
}

function cudaDeviceCount(): { count: number; why: string | null } {
  const { addon, error } = loadAddon();
  if (!addon) return { count: 0, why: error };
  const probe = addon.probe();
  return { count: probe.count, why: probe.count === 0 ? probe.message : null };
}
