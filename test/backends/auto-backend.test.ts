import { describe, expect, it } from 'vitest';
import { createBackend } from '../../backends/index.js';
import { cudaForTests } from '../support/cuda-harness.js';

describe('--backend auto', () => {
  it('picks cuda when a device is there, else the cpu backend', async () => {
    const backend = await createBackend('auto');
    expect(backend.name).toBe(cudaForTests().gpu ? 'cuda' : 'cpu');
    await backend.close();
  });
});
