#!/usr/bin/env node
// The package's install step: builds the native addons with cmake-js where their tools are present,
// and otherwise says so in one line and succeeds, so installs without them still work:
// - native/cpu (C++ only): the cpu backend's load-time block work; without it the TypeScript
//   path makes the same blocks, more slowly.
// - native/ (CUDA): the cuda backend; without nvcc that backend reports itself unavailable.
// A failed build also leaves the install usable (SLUICE_NATIVE_REQUIRED=1 makes it fail instead).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const jobs = String(Math.max(1, Number(process.env.SLUICE_NATIVE_JOBS ?? 0) || availableParallelism()));
const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');

/** A tool on PATH, else (for CUDA's) in $CUDA_HOME / $CUDA_PATH, else (when neither is set) in /usr/local/cuda. */
function findTool(name, cudaBin = false) {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  if (cudaBin) {
    const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH].filter(Boolean);
    for (const home of homes.length ? homes : ['/usr/local/cuda']) dirs.push(join(home, 'bin'));
  }
  for (const dir of dirs) if (existsSync(join(dir, name))) return join(dir, name);
  return null;
}

/** cmake-js compile of one addon; true when it built. */
function compile(what, directory, extraArgs) {
  const started = Date.now();
  const result = spawnSync(process.execPath, [cmakeJs, 'compile', '--directory', directory, '--out', join(directory, 'build'), ...extraArgs, '--parallel', jobs], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs },
  });
  if (result.status !== 0) {
    console.log(`sluice: the ${what} failed to build (exit ${result.status})`);
    if (process.env.SLUICE_NATIVE_REQUIRED) process.exit(1);
    return false;
  }
  console.log(`sluice: built the ${what} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return true;
}

function buildCpuAddon() {
  if (!findTool('c++') && !findTool('g++') && !findTool('clang++')) {
    console.log('sluice: no C++ compiler found, skipping the cpu addon (cpu loads use the slower TypeScript path)');
    return;
  }
  compile('cpu addon', 'native/cpu', []);
}

function buildCudaAddon() {
  const nvcc = findTool('nvcc', true);
  if (!nvcc) {
    console.log('sluice: nvcc not found, skipping the CUDA addon (the cuda backend will be unavailable)');
    return;
  }
  if (!compile('CUDA addon', 'native', ['--CDCMAKE_CUDA_COMPILER=' + nvcc])) console.log('sluice: the cuda backend will be unavailable');
}

if (process.env.SLUICE_SKIP_NATIVE) {
  console.log('sluice: SLUICE_SKIP_NATIVE is set, not building the native addons');
  process.exit(0);
}
if (!findTool('cmake')) {
  console.log('sluice: cmake is not installed, skipping the native addons (the cuda backend will be unavailable, cpu loads use the slower TypeScript path)');
  process.exit(0);
}
if (!existsSync(cmakeJs)) {
  console.log('sluice: cmake-js is not installed, skipping the native addons');
  process.exit(0);
}
buildCpuAddon();
buildCudaAddon();
