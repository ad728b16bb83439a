#!/usr/bin/env bash
# bench:engine of a base commit and of this tree, alternated in one invocation, so machine load
# hits both alike: the only comparison that means something on a shared machine.
#
#   bash scripts/bench-engine-ab.sh [BASE_COMMIT (default 18f4015)] [ROUNDS (default 3)] [RUNNING (default 256)] [STEPS (default 1000)]
#
# The base is checked out in a temporary detached worktree that shares this tree's node_modules;
# both sides run this tree's scripts/bench-engine.ts (the same harness: what differs is the engine).
set -euo pipefail
base_ref="${1:-18f4015}"
rounds="${2:-3}"
running="${3:-256}"
steps="${4:-1000}"
here="$(cd "$(dirname "$0")/.." && pwd)"
base_dir="$(mktemp -d /tmp/sluice-bench-base.XXXXXX)"
cleanup() { git -C "$here" worktree remove --force "$base_dir" >/dev/null 2>&1 || rm -rf "$base_dir"; }
trap cleanup EXIT
git -C "$here" worktree add --detach "$base_dir" "$base_ref" >/dev/null 2>&1
ln -s "$here/node_modules" "$base_dir/node_modules"
cp "$here/scripts/bench-engine.ts" "$base_dir/scripts/bench-engine.ts"
echo "bench:engine at $running running, $steps steps: base $(git -C "$here" rev-parse --short "$base_ref") vs this tree $(git -C "$here" rev-parse --short HEAD)$(git -C "$here" diff --quiet HEAD -- src || echo '+changes')"
run() { (cd "$1" && node --expose-gc --import tsx scripts/bench-engine.ts --json --only "$running" --steps "$steps"); }
for round in $(seq 1 "$rounds"); do
  for side in base this; do
    dir="$here"; [ "$side" = base ] && dir="$base_dir"
    result="$(run "$dir")"
    echo "round $round $side: $result load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
