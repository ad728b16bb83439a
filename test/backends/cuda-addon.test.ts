import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createBackend, pickAutoBackend } from '../../backends/index.js';
import { addonPath, loadAddon } from '../../backends/cuda/native.js';
import { BackendUnavailableError } from '../../src/errors.js';
import { findTool } from '../support/cuda-harness.js';

// The install builds the addon when nvcc and cmake are both there.
const nvcc = findTool('cmake') ? findTool('nvcc') : null;
const built = existsSync(addonPath());

describe('cuda addon (no GPU needed)', () => {
  it('is built wherever nvcc is present (npm install runs scripts/build-native.mjs)', () => {
    if (!nvcc) {
      expect(loadAddon().addon === null || built).toBe(true);
      return;
    }
    expect(built, `nvcc is at ${nvcc} but ${addonPath()} is missing: run node scripts/build-native.mjs`).toBe(true);
  });

  describe.skipIf(!built)(`the built addon${built ? '' : ' (skipped: not built here, no nvcc)'}`, () => {
    it('loads without a GPU and either lists devices or says there is no CUDA device', () => {
      const { addon, error } = loadAddon();
      expect(error).toBeNull();
      const probe = addon!.probe();
      if (probe.count === 0) {
        expect(probe.message).toMatch(/^no CUDA device/);
        // 35: no driver, 100: no device; both must read as "no device", never crash.
        expect([0, 35, 100]).toContain(probe.errorCode);
        expect(probe.devices).toEqual([]);
      } else {
        expect(probe.message).toBe('');
        expect(probe.devices[0]!.computeCapability).toBeGreaterThan(0);
      }
    });

    it('refuses to create a model on a machine without a device, with a clear error', () => {
      const { addon } = loadAddon();
      if (addon!.probe().count > 0) return;
      expect(() => new addon!.CudaModel(0, true)).toThrow(/no CUDA device/);
    });

    it('makes --backend cuda unavailable (and auto fall through) when there is no device', async () => {
      const { addon } = loadAddon();
      if (addon!.probe().count > 0) return;
      await expect(createBackend('cuda')).rejects.toBeInstanceOf(BackendUnavailableError);
      await expect(createBackend('cuda')).rejects.toThrow(/^cuda: unavailable here: no CUDA device/);
      const auto = await pickAutoBackend();
      expect(auto.name).not.toBe('cuda');
      await auto.close();
    });
  });

  it('install step: without cmake or nvcc it prints one line and succeeds', () => {
    // A PATH holding node alone: the folder node lives in may hold cmake and compilers too.
    const bin = mkdtempSync(join(tmpdir(), 'sluice-path-'));
    symlinkSync(process.execPath, join(bin, 'node'));
    const run = spawnSync(process.execPath, ['scripts/build-native.mjs'], {
      env: { PATH: bin, CUDA_HOME: '/nonexistent-cuda', HOME: process.env.HOME ?? '/tmp' },
      encoding: 'utf8',
    });
    rmSync(bin, { recursive: true, force: true });
    expect(run.status).toBe(0);
    expect(run.stdout.trim().split('\n')).toEqual([
      'sluice: cmake is not installed, skipping the native addons (the cuda backend will be unavailable, cpu loads use the slower TypeScript path)',
    ]);
  });

  it('reports a missing or broken addon file by name instead of throwing', () => {
    const missing = loadAddon('/nonexistent/sluice_cuda.node');
    expect(missing.addon).toBeNull();
    expect(missing.error).toMatch(/\/nonexistent\/sluice_cuda\.node is missing/);
    const broken = loadAddon(fileURLToPath(import.meta.url));
    expect(broken.addon).toBeNull();
    expect(broken.error).toMatch(/failed to load/);
  });
});
