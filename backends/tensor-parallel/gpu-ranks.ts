import { UserError } from '../../src/errors.js';

/**
 * The GPU each cuda rank runs on: rank r on GPU baseGpuId + r (SGLang's --base-gpu-id), one rank
 * per GPU. Fewer GPUs than that is a one-line UserError saying how many there are (and, when
 * the count is 0, why the driver or addon found none).
 */
export function planGpuRanks(tpSize: number, gpuCount: number, baseGpuId = 0, whyNone: string | null = null): number[] {
  if (gpuCount < baseGpuId + tpSize) {
    const from = baseGpuId > 0 ? ` (ranks on GPUs ${baseGpuId}..${baseGpuId + tpSize - 1} from --base-gpu-id)` : '';
    const why = gpuCount === 0 && whyNone ? ` (${whyNone.split('\n')[0]})` : '';
    throw new UserError(`--tp-size ${tpSize}: this machine has ${gpuCount} CUDA GPU${gpuCount === 1 ? '' : 's'}${why}${from}`);
  }
  return Array.from({ length: tpSize }, (_, rank) => baseGpuId + rank);
}
