import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { autoOrder, backendNames, backends } from '../../backends/index.js';
import { runSluice, sluiceBin } from '../support/sluice-process.js';

describe('the backend registry drives the CLI', () => {
  it('lists every registered backend in the error for an unknown one', async () => {
    const run = await runSluice(['serve', '--backend', 'nope']);
    expect(run.code).not.toBe(0);
    const line = run.stderr.split('\n').find((l) => l.includes('nope'))!;
    expect(line).toBeDefined();
    for (const name of ['auto', ...backendNames]) expect(line).toContain(name);
  });

  it('describes auto and every backend in --help of serve and generate', async () => {
    for (const command of ['serve', 'generate']) {
      const run = await runSluice([command, '--help']);
      expect(run.code).toBe(0);
      const help = run.stdout.replace(/\s+/g, ' ');
      expect(help).toContain(`auto: the first available of ${autoOrder.join(', ')}`);
      for (const b of backends) expect(help).toContain(`${b.name}: ${b.summary}`);
      expect(help).toContain(`choices: ${['auto', ...backendNames].map((n) => `"${n}"`).join(', ')}`);
    }
  });

  it('shows an option error of a lower layer with its flag', async () => {
    const run = await runSluice(['serve', '--mem-fraction-static', '1.5']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error: --mem-fraction-static must be in \(0, 1\], got 1.5$/m);
  });

  it('refuses an unknown --cpu-weights, also from SLUICE_CPU_WEIGHTS', async () => {
    const run = await runSluice(['generate', '--backend', 'ref', '--cpu-weights', 'q5', '--prompt', 'x']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--cpu-weights <format>' argument 'q5' is invalid. Allowed choices are f32, q8, q4/);
    const fromEnv = spawnSync(process.execPath, [sluiceBin, 'generate', '--backend', 'ref', '--prompt', 'x'], {
      env: { ...process.env, SLUICE_CPU_WEIGHTS: 'int4' },
      encoding: 'utf8',
    });
    expect(fromEnv.status).not.toBe(0);
    expect(fromEnv.stderr).toMatch(/value 'int4' from env 'SLUICE_CPU_WEIGHTS' is invalid. Allowed choices are f32, q8, q4/);
  });

  it('refuses --cpu-gemm native off the cpu backend or with f32 weights, and an unknown kernel from SLUICE_CPU_GEMM', async () => {
    const onRef = await runSluice(['generate', '--backend', 'ref', '--cpu-gemm', 'native', '--prompt', 'x']);
    expect(onRef.code).toBe(1);
    expect(onRef.stderr).toMatch(/--cpu-gemm native: runs on the cpu backend only; give --backend cpu/);
    const f32 = await runSluice(['generate', '--backend', 'cpu', '--cpu-gemm', 'native', '--cpu-weights', 'f32', '--prompt', 'x']);
    expect(f32.code).toBe(1);
    expect(f32.stderr).toMatch(/--cpu-gemm native: runs Q8_0 or Q4_0 blocks, not --cpu-weights f32; give --cpu-weights q8 or q4, or --cpu-gemm ort/);
    const fromEnv = spawnSync(process.execPath, [sluiceBin, 'generate', '--backend', 'cpu', '--prompt', 'x'], { env: { ...process.env, SLUICE_CPU_GEMM: 'amx' }, encoding: 'utf8' });
    expect(fromEnv.status).not.toBe(0);
    expect(fromEnv.stderr).toMatch(/value 'amx' from env 'SLUICE_CPU_GEMM' is invalid. Allowed choices are auto, ort, native/);
  });

  it('refuses a --kv-cache-dtype it does not know, and fp8 caches on backends other than cpu, naming them', async () => {
    const onRef = await runSluice(['generate', '--backend', 'ref', '--kv-cache-dtype', 'fp8_e5m2', '--prompt', 'x']);
    expect(onRef.code).toBe(1);
    expect(onRef.stderr).toMatch(/--kv-cache-dtype fp8_e5m2: implemented on the cpu backend only; give --backend cpu \(--backend ref keeps/);
    const onAuto = await runSluice(['generate', '--kv-cache-dtype', 'fp8', '--prompt', 'x']);
    expect(onAuto.code).toBe(1);
    expect(onAuto.stderr).toMatch(/--kv-cache-dtype fp8: implemented on the cpu backend only; give --backend cpu \(--backend auto keeps/);
    const fourBitOnRef = await runSluice(['generate', '--backend', 'ref', '--kv-cache-dtype', 'q4_0', '--prompt', 'x']);
    expect(fourBitOnRef.code).toBe(1);
    expect(fourBitOnRef.stderr).toMatch(/--kv-cache-dtype q4_0: implemented on the cpu backend only/);
    const unknown = await runSluice(['serve', '--backend', 'cpu', '--kv-cache-dtype', 'int3']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/--kv-cache-dtype int3: not supported; choose one of auto, fp8, fp8_e4m3, fp8_e5m2, q8_0, q4_0/);
    const withTp = await runSluice(['generate', '--backend', 'cpu', '--tp-size', '2', '--kv-cache-dtype', 'fp8', '--prompt', 'x']);
    expect(withTp.code).toBe(1);
    expect(withTp.stderr).toMatch(/--kv-cache-dtype fp8: not implemented with --tp-size above 1/);
  });

  it("refuses SGLang's --quantization, pointing at --cpu-weights", async () => {
    const run = await runSluice(['generate', '--backend', 'ref', '--quantization', 'q4', '--prompt', 'x']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/--quantization q4: SGLang's quantization methods .* are not supported; .*--cpu-weights f32\|q8\|q4; did you mean --cpu-weights q4\?/);
    const awq = await runSluice(['serve', '--quantization', 'awq']);
    expect(awq.code).toBe(1);
    expect(awq.stderr).toMatch(/--quantization awq: SGLang's quantization methods/);
    expect(awq.stderr).not.toMatch(/did you mean/);
  });
});
