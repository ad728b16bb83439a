import { describe, expect, it } from 'vitest';
import { planGpuRanks } from '../../backends/tensor-parallel/gpu-ranks.js';
import { UserError } from '../../src/errors.js';

// The host side of cuda ranks, which needs no GPU: which GPU each rank takes, and the one-line
// refusal when the machine has fewer than --tp-size asks.
describe('cuda rank planning', () => {
  it('puts rank r on GPU --base-gpu-id + r', () => {
    expect(planGpuRanks(4, 4)).toEqual([0, 1, 2, 3]);
    expect(planGpuRanks(2, 8, 4)).toEqual([4, 5]);
    expect(planGpuRanks(8, 8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('says in one line how many GPUs there are when fewer than asked', () => {
    const refusal = (run: () => unknown) => {
      try {
        run();
      } catch (e) {
        expect(e).toBeInstanceOf(UserError);
        return (e as Error).message;
      }
      throw new Error('no refusal');
    };
    expect(refusal(() => planGpuRanks(4, 1))).toBe('--tp-size 4: this machine has 1 CUDA GPU');
    expect(refusal(() => planGpuRanks(4, 2))).toBe('--tp-size 4: this machine has 2 CUDA GPUs');
    expect(refusal(() => planGpuRanks(2, 3, 2))).toBe('--tp-size 2: this machine has 3 CUDA GPUs (ranks on GPUs 2..3 from --base-gpu-id)');
    // No GPU: the first line of the driver's or addon's reason.
    const none = refusal(() => planGpuRanks(4, 0, 0, 'cudaGetDeviceCount: no CUDA-capable device is detected\n(driver 550)'));
    expect(none).toBe('--tp-size 4: this machine has 0 CUDA GPUs (cudaGetDeviceCount: no CUDA-capable device is detected)');
  });
});
