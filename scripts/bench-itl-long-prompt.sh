#!/usr/bin/env bash
# ITL while long prompts arrive among running decodes (issue 18 item 7): serves the tiny preset
# on the cpu backend from the checkout given (default: this one) and runs `sluice bench` with
# prompts of 0-4000 random tokens, all at once, 16 in flight. Prints bench's summary and the load.
# Usage: scripts/bench-itl-long-prompt.sh [checkout] [extra serve flags...]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
shift || true
port=$((31000 + RANDOM % 1000))
log=$(mktemp)
node "$root/bin/sluice.mjs" serve --model-path tiny --backend cpu --port "$port" --disable-log-requests "$@" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
until grep -q "serving .* on http" "$log"; do sleep 0.5; kill -0 $server || { cat "$log"; exit 1; }; done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
node "$root/bin/sluice.mjs" bench --backend sluice --base-url "http://127.0.0.1:$port" --dataset-name random \
  --random-input-len 4000 --random-output-len 64 --random-range-ratio 0 --num-prompts 48 --request-rate inf \
  --max-concurrency 16 --tokenizer tiny --disable-tqdm --output-file /dev/null
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
