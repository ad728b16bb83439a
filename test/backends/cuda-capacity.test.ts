import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The addon's buffer growth policy (native/src/step_inputs.h), built for the host: a page table
 * that grows by one entry per step (page size 1) must not be reallocated step after step, since
 * every reallocation synchronizes the device and drops all captured CUDA graphs.
 */
const compiler = ['c++', 'g++', 'clang++'].find((c) => spawnSync(c, ['--version']).status === 0) ?? null;
const work = mkdtempSync(join(tmpdir(), 'sluice-capacity-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(cases: [number, number][]): { growthsEmpty: number; capEmpty: number; growthsPool: number; capPool: number }[] {
  const binary = join(work, 'capacity');
  const build = spawnSync(compiler!, ['-std=c++17', '-O2', '-Inative/src', 'native/test/capacity_check.cc', '-o', binary], { encoding: 'utf8' });
  expect(build.status, build.stderr).toBe(0);
  const out = spawnSync(binary, [], { input: cases.map((c) => c.join(' ')).join('\n') + '\n', encoding: 'utf8' });
  expect(out.status, out.stderr).toBe(0);
  return out.stdout.trim().split('\n').map((line) => {
    const [growthsEmpty, capEmpty, growthsPool, capPool] = line.split(' ').map(Number) as [number, number, number, number];
    return { growthsEmpty, capEmpty, growthsPool, capPool };
  });
}

describe.skipIf(!compiler)(`cuda buffer growth (host build of native/src/step_inputs.h)${compiler ? '' : ' (skipped: no C++ compiler here)'}`, () => {
  it('grows a creeping page table a logarithmic number of times, and never when sized from the KV pool', () => {
    const [creep, pool, beyond] = run([[1 << 20, 300_000], [300_000, 300_000], [1000, 300_000]]);
    // From empty: 2, 4, ... 2^19 >= 300,000: 19 reallocations instead of 300,000.
    expect(creep!.growthsEmpty).toBe(Math.ceil(Math.log2(300_000)));
    expect(creep!.capEmpty).toBeGreaterThanOrEqual(300_000);
    expect(creep!.capEmpty).toBeLessThan(600_000);
    // Sized from a pool of as many pages as the table ever lists: no reallocation at all.
    expect(pool!.growthsPool).toBe(0);
    // Shared prefixes can list more entries than there are pages: it then doubles, a few times.
    expect(beyond!.growthsPool).toBeLessThanOrEqual(Math.ceil(Math.log2(300_000 / 1314)) + 1);
    expect(beyond!.capPool).toBeGreaterThanOrEqual(300_000);
  });
});
