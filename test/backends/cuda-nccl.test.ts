import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cudaForTests, findTool } from '../support/cuda-harness.js';

/**
 * The NCCL loader (native/src/nccl.cc) built for the host with a check program: it finds
 * libnccl.so.2 at run time as the cuBLASLt loader does, tells a missing library from a broken
 * one, and binds the symbols tensor-parallel cuda ranks use. On a GPU machine with NCCL, a
 * one-rank communicator runs an all-reduce and an all-gather.
 */
const compiler = ['c++', 'g++', 'clang++'].find((c) => spawnSync(c, ['--version']).status === 0) ?? null;
const work = mkdtempSync(join(tmpdir(), 'sluice-nccl-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function build(): string {
  const binary = join(work, 'nccl_check');
  const out = spawnSync(compiler!, ['-std=c++17', '-O2', '-Inative/src', 'native/test/nccl_check.cc', 'native/src/nccl.cc', '-ldl', '-o', binary], { encoding: 'utf8' });
  expect(out.status, out.stderr).toBe(0);
  return binary;
}

function check(binary: string, env: Record<string, string> = {}): string {
  const out = spawnSync(binary, [], { encoding: 'utf8', env: { ...process.env, ...env } });
  expect(out.status, out.stderr + out.stdout).toBe(0);
  return out.stdout.trim();
}

describe.skipIf(!compiler)(`NCCL loader (host build)${compiler ? '' : ' (skipped: no C++ compiler here)'}`, () => {
  it('binds a library with the NCCL symbols and reads its version', () => {
    const lib = join(work, 'libnccl.so.2');
    const so = spawnSync(compiler!, ['-shared', '-fPIC', 'native/test/fake_nccl.cc', '-o', lib], { encoding: 'utf8' });
    expect(so.status, so.stderr).toBe(0);
    expect(check(build(), { SLUICE_NCCL_LIB: lib })).toBe(`loaded NCCL 22703 from ${lib}`);
  });

  it('names a broken file and a library without the symbols, rather than "not found"', () => {
    const binary = build();
    const notElf = join(work, 'not-a-library.so');
    writeFileSync(notElf, 'text');
    expect(check(binary, { SLUICE_NCCL_LIB: notElf })).toMatch(new RegExp(`^missing: ${notElf}: .*`));
    const other = join(work, 'libother.so');
    expect(spawnSync(compiler!, ['-shared', '-fPIC', '-x', 'c++', '-', '-o', other], { input: 'extern "C" int f() { return 1; }\n' }).status).toBe(0);
    expect(check(binary, { SLUICE_NCCL_LIB: other })).toBe(`missing: ${other}: lacks an NCCL symbol sluice uses`);
  });
});

const cuda = cudaForTests();
const nvcc = findTool('nvcc');
describe.skipIf(!cuda.gpu || !nvcc)(`NCCL on the GPU${cuda.gpu ? (nvcc ? '' : ' (skipped: no nvcc)') : ` (${cuda.skipReason})`}`, () => {
  it('a one-rank communicator: all-reduce (sum) and all-gather on GPU 0', () => {
    const binary = join(work, 'nccl_device_check');
    const out = spawnSync(nvcc!, ['-std=c++17', '-O2', '-DSLUICE_NCCL_DEVICE_CHECK', '-x', 'cu', '-Inative/src', 'native/test/nccl_check.cc', 'native/src/nccl.cc', '-ldl', '-o', binary], { encoding: 'utf8' });
    expect(out.status, out.stderr).toBe(0);
    const text = check(binary, { SLUICE_NCCL_SINGLE_RANK: '1' });
    expect(text, 'NCCL must be installed on the GPU machine (python site-packages nvidia/nccl/lib)').toMatch(/^loaded NCCL \d+ from /);
    expect(text).toMatch(/single-rank all-reduce and all-gather: ok$/);
  });
});
