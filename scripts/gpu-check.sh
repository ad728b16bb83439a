#!/usr/bin/env bash
# The CUDA check for a GPU machine that has no network and maybe no Node.js, in two stages that fit
# a 15-minute lease with room for a rerun.
# Before sending the tree: node scripts/pack-gpu.mjs (fills the git-ignored .gpu-pack/ with an
# xz-compressed node, the CUDA path's node_modules and the built addon; carry ".gpu-pack").
#
#   bash scripts/gpu-check.sh               stage 1, then stage 2 when stage 1 passed
#   bash scripts/gpu-check.sh --stage 1     the smoke run alone (at most ~3 minutes)
#   bash scripts/gpu-check.sh --stage 2     the benchmark table alone (at most ~5 minutes)
#   bash scripts/gpu-check.sh --stage 3     the remaining GPU tests (small presets, server end to end,
#                                           token masks and the JSON-schema suite)
#   bash scripts/gpu-check.sh --stage 4     tensor-parallel cuda ranks on this GPU (at most ~2 minutes)
#
# Stage 1: unpack, print the device, driver and GEMM path (cuBLASLt file, or our fallback and why),
# op parity with ref on a few shapes and tiny greedy parity (stops at the first failure, naming the
# op and shape), then one llama-3.1-8b batch-1 decode step per path variant.
# Stage 2: the table, printed row by row as measured (scripts/bench-cuda.ts --stage table).
# Stage 4: NCCL (found in python's nvidia/nccl/lib, or $SLUICE_NCCL_LIB): the addon's one-rank
# group against the plain graph (eager and captured), rank slices of dummy weights generated on the
# device, and the loader's own one-rank check when nvcc is here; multi-GPU parity runs where there
# are 2 or more GPUs and says it is skipped where not.
# Any other arguments go to bench-cuda.ts. Exit: 0 passed, 1 a test or benchmark failed, 2 no CUDA
# device, 3 something to run with is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pack=$root/.gpu-pack
work=${SLUICE_GPU_WORK:-${TMPDIR:-/tmp}/sluice-gpu-check}
mkdir -p "$work/bin"
say() { echo "gpu-check: $*" >&2; }
started=$(date +%s)
stage=all
if [ "${1:-}" = "--stage" ]; then
  stage=${2:-}
  shift 2 || true
fi
case "$stage" in all | 1 | 2 | 3 | 4) ;; *) say "--stage must be 1, 2, 3 or 4"; exit 3 ;; esac

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

# 4. A device, its driver, and the GEMM path.
"$node_bin" -e '
  const addon = require(process.argv[1]);
  const probe = addon.probe();
  if (probe.count === 0) { console.error(`gpu-check: ${probe.message}: nothing to check here`); process.exit(2); }
  for (const d of probe.devices) console.error(`gpu-check: ${d.name}, sm_${d.computeCapability}, ${(d.totalBytes / 2 ** 30).toFixed(0)} GiB, ${d.multiProcessors} SMs`);
  const model = new addon.CudaModel(0, true);
  console.error(`gpu-check: ${model.description()}`);
  model.close();
' "$SLUICE_CUDA_ADDON"
probe_rc=$?
if [ $probe_rc -ne 0 ]; then exit $((probe_rc == 2 ? 2 : 3)); fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader >&2

stage1() {
  say "stage 1: op parity and tiny greedy parity (stops at the first failure)"
  timeout "${SLUICE_GPU_STAGE1_TEST_TIMEOUT:-120}" "$node_bin" node_modules/vitest/vitest.mjs run \
    test/backends/cuda-ops.test.ts test/backends/cuda-model.test.ts \
    -t 'cuda ops|bit-identical|fused q/k/v|every path variant|agrees with ref on tiny' --bail 1 --reporter=verbose
  local rc=$?
  [ $rc -eq 124 ] && say "stage 1 tests ran past their time limit"
  [ $rc -ne 0 ] && return 1
  say "stage 1: one llama-3.1-8b batch-1 decode step per path ($(($(date +%s) - started)) s so far)"
  timeout "${SLUICE_GPU_STAGE1_BENCH_TIMEOUT:-75}" "$node_bin" --import tsx scripts/bench-cuda.ts --stage smoke --budget-seconds 60 "$@"
}
stage2() {
  say "stage 2: the benchmark table, row by row ($(($(date +%s) - started)) s so far)"
  timeout "${SLUICE_GPU_STAGE2_TIMEOUT:-300}" "$node_bin" --import tsx scripts/bench-cuda.ts --stage table --budget-seconds 280 "$@"
  local rc=$?
  [ $rc -eq 124 ] && say "stage 2 ran past its time limit (the rows above were measured)"
  return $rc
}
stage3() {
  say "stage 3: the remaining GPU tests (whole-model small, batched paged steps, KV sizing, server)"
  timeout "${SLUICE_GPU_STAGE3_TIMEOUT:-240}" "$node_bin" node_modules/vitest/vitest.mjs run \
    test/backends/cuda-model.test.ts test/backends/cuda-serve.test.ts --reporter=verbose || return 1
  # Prompt log-probs (headLogits) against the reference backend through the engine.
  timeout "${SLUICE_GPU_STAGE3_TIMEOUT:-240}" "$node_bin" node_modules/vitest/vitest.mjs run \
    test/backends/prompt-logprobs.test.ts -t '^prompt log-probs against the reference backend cuda' --reporter=verbose || return 1
  # Structured output: the sampler's masks against the host sampler (also split into launchForward
  # and sampleLaunched), then the JSON-schema suite through the server (cuda-model.test.ts above
  # holds masked steps against ref).
  timeout "${SLUICE_GPU_STAGE3_TIMEOUT:-240}" "$node_bin" node_modules/vitest/vitest.mjs run \
    test/structured/token-mask.test.ts -t 'cuda sampler' --reporter=verbose || return 1
  timeout "${SLUICE_GPU_STAGE3_TIMEOUT:-240}" "$node_bin" node_modules/vitest/vitest.mjs run \
    test/structured/json-schema-suite.test.ts -t 'JSON-schema suite on cuda' --reporter=verbose
}
stage4() {
  say "stage 4: tensor-parallel cuda ranks (NCCL one-rank group, rank weight slices, multi-GPU parity where there are GPUs)"
  timeout "${SLUICE_GPU_STAGE4_TIMEOUT:-150}" "$node_bin" node_modules/vitest/vitest.mjs run \
    test/backends/cuda-ranks.test.ts test/backends/cuda-nccl.test.ts --reporter=verbose
}

rc=0
case "$stage" in
  1) stage1 "$@" || rc=1 ;;
  2) stage2 "$@" || rc=1 ;;
  3) stage3 || rc=1 ;;
  4) stage4 || rc=1 ;;
  all)
    if stage1 "$@"; then stage2 "$@" || rc=1; else rc=1; say "stage 1 failed: stage 2 not run (run it alone with --stage 2)"; fi
    ;;
esac
say "done in $(($(date +%s) - started)) s: stage $stage, exit $rc"
exit $rc
