#!/usr/bin/env node
// The package's install step: builds the CUDA addon (native/) with cmake-js when nvcc is present,
// and otherwise says so in one line and succeeds, so installs without CUDA still work (the cuda
// backend then reports itself unavailable). A failed build also leaves the install usable.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** nvcc on PATH, else in $CUDA_HOME / $CUDA_PATH, else (when neither is set) in /usr/local/cuda. */
function findTool(name, cudaBin) {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  if (cudaBin) {
    const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH].filter(Boolean);
    for (const home of homes.length ? homes : ['/usr/local/cuda']) dirs.push(join(home, 'bin'));
  }
  for (const dir of dirs) if (existsSync(join(dir, name))) return join(dir, name);
  return null;
}

if (process.env.SLUICE_SKIP_NATIVE) {
  console.log('sluice: SLUICE_SKIP_NATIVE is set, not building the CUDA addon');
  process.exit(0);
}
const nvcc = findTool('nvcc', true);
if (!nvcc) {
  console.log('sluice: nvcc not found, skipping the CUDA addon (the cuda backend will be unavailable)');
  process.exit(0);
}
if (!findTool('cmake', false)) {
  console.log(`sluice: nvcc is at ${nvcc} but cmake is not installed, skipping the CUDA addon (the cuda backend will be unavailable)`);
  process.exit(0);
}
const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
if (!existsSync(cmakeJs)) {
  console.log('sluice: cmake-js is not installed, skipping the CUDA addon');
  process.exit(0);
}
const started = Date.now();
const jobs = String(Math.max(1, Number(process.env.SLUICE_NATIVE_JOBS ?? 0) || (await import('node:os')).availableParallelism()));
const result = spawnSync(
  process.execPath,
  [cmakeJs, 'compile', '--directory', 'native', '--out', 'native/build', '--CDCMAKE_CUDA_COMPILER=' + nvcc, '--parallel', jobs],
  { cwd: root, stdio: 'inherit', env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs } },
);
if (result.status !== 0) {
  console.log(`sluice: the CUDA addon failed to build (exit ${result.status}); the cuda backend will be unavailable`);
  process.exit(process.env.SLUICE_NATIVE_REQUIRED ? 1 : 0);
}
console.log(`sluice: built the CUDA addon in ${((Date.now() - started) / 1000).toFixed(0)} s`);
