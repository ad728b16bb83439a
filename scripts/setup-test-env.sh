#!/usr/bin/env bash
# Installs the system packages the test suite needs on a Debian machine (a no-op when present):
# a Vulkan software driver that Dawn accepts (WebGPU tests) and Chromium (the report test).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for step in install-vulkan.sh setup-chromium.sh; do
  if [ -f "$here/$step" ]; then bash "$here/$step"; fi
done
