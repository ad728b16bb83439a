#!/usr/bin/env bash
# The CUDA check for a GPU machine that has no network and maybe no Node.js (issue 8).
# Before sending the tree: node scripts/pack-gpu.mjs (fills the git-ignored .gpu-pack/ with an
# xz-compressed node, the CUDA path's node_modules and the built addon; carry ".gpu-pack").
# On the GPU machine: bash scripts/gpu-check.sh. It unpacks what travels with the tree, runs the
# CUDA tests, then benchmarks Llama-3.1-8B (dummy weights) and prints one table; ~8 minutes at most.
# Exit: 0 all passed, 1 tests or benchmark failed, 2 no CUDA device, 3 something to run with is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pack=$root/.gpu-pack
work=${SLUICE_GPU_WORK:-${TMPDIR:-/tmp}/sluice-gpu-check}
mkdir -p "$work/bin"
say() { echo "gpu-check: $*" >&2; }
started=$(date +%s)

unxz_to() {
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$1" >"$2"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  else
    say "neither xz nor python3 is here to unpack $1"
    exit 3
  fi
}

# 1. Node.js: the machine's own when it is >= 20 (unless SLUICE_GPU_CHECK_PACKED_NODE is set), else the packed one.
node_bin=""
if [ -z "${SLUICE_GPU_CHECK_PACKED_NODE:-}" ] && command -v node >/dev/null 2>&1 &&
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
  node_bin=$(command -v node)
elif [ -f "$pack/node.xz" ]; then
  if [ ! -x "$work/bin/node" ]; then
    unxz_to "$pack/node.xz" "$work/bin/node.partial" && chmod +x "$work/bin/node.partial" && mv "$work/bin/node.partial" "$work/bin/node"
  fi
  node_bin=$work/bin/node
else
  say "no Node.js >= 20 here and no .gpu-pack/node.xz: run node scripts/pack-gpu.mjs before sending the tree"
  exit 3
fi
export PATH="$(dirname "$node_bin"):$PATH"
say "node $("$node_bin" --version) at $node_bin"

# 2. node_modules: unpacked into the tree when it did not travel.
if [ ! -f node_modules/vitest/vitest.mjs ] || [ ! -f node_modules/tsx/package.json ]; then
  if [ ! -f "$pack/modules.tar.xz" ]; then
    say "node_modules is missing and .gpu-pack/modules.tar.xz is not here: run node scripts/pack-gpu.mjs"
    exit 3
  fi
  if command -v xz >/dev/null 2>&1; then
    tar -xJf "$pack/modules.tar.xz"
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(".")' "$pack/modules.tar.xz"
  fi || { say "could not unpack $pack/modules.tar.xz"; exit 3; }
  say "unpacked $(wc -l <"$pack/modules.txt" 2>/dev/null || echo '?') packages into node_modules"
fi

# 3. The addon: a build in the tree wins, else the packed one.
if [ -z "${SLUICE_CUDA_ADDON:-}" ]; then
  if [ -f native/build/Release/sluice_cuda.node ]; then
    export SLUICE_CUDA_ADDON=$root/native/build/Release/sluice_cuda.node
  elif [ -f "$pack/sluice_cuda.node" ]; then
    export SLUICE_CUDA_ADDON=$pack/sluice_cuda.node
  else
    say "no CUDA addon: build it (node scripts/build-native.mjs) and pack it (node scripts/pack-gpu.mjs)"
    exit 3
  fi
fi

# 4. A device?
"$node_bin" -e '
  const probe = require(process.argv[1]).probe();
  if (probe.count === 0) { console.error(`gpu-check: ${probe.message}: nothing to check here`); process.exit(2); }
  for (const d of probe.devices) console.error(`gpu-check: ${d.name}, sm_${d.computeCapability}, ${(d.totalBytes / 2 ** 30).toFixed(0)} GiB, ${d.multiProcessors} SMs`);
' "$SLUICE_CUDA_ADDON"
probe_rc=$?
if [ $probe_rc -ne 0 ]; then exit $((probe_rc == 2 ? 2 : 3)); fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader >&2

# 5. The CUDA tests (op parity, whole-model parity, server end to end).
say "running the CUDA tests"
timeout "${SLUICE_GPU_TEST_TIMEOUT:-210}" "$node_bin" node_modules/vitest/vitest.mjs run test/backends/cuda --reporter=verbose
tests_rc=$?
[ $tests_rc -eq 124 ] && say "the CUDA tests ran past their time limit"

# 6. The benchmark table.
say "benchmarking (tests took $(($(date +%s) - started)) s so far)"
timeout "${SLUICE_GPU_BENCH_TIMEOUT:-270}" "$node_bin" --import tsx scripts/bench-cuda.ts "$@"
bench_rc=$?
[ $bench_rc -eq 124 ] && say "the benchmark ran past its time limit"

say "done in $(($(date +%s) - started)) s: tests exit $tests_rc, benchmark exit $bench_rc"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ]
