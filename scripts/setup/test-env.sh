#!/usr/bin/env bash
# `npm run setup:test-env` (the first step of `npm test`): on a Debian machine, installs with
# apt-get the two system packages the test suite needs when they are missing, and says so in one
# line first: a Vulkan driver that Dawn accepts (Mesa's lavapipe, so the WebGPU tests run without a
# GPU) and Chromium (headless, for the benchmark report test). SLUICE_SKIP_TEST_SETUP=1 skips it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ -n "${SLUICE_SKIP_TEST_SETUP:-}" ]; then
  echo "setup:test-env: skipped (SLUICE_SKIP_TEST_SETUP is set); WebGPU tests need a Vulkan driver, the report test /usr/bin/chromium"
  exit 0
fi

missing=()
bash "$here/install-vulkan.sh" --check || missing+=("Mesa lavapipe (a software Vulkan driver, so the WebGPU tests run without a GPU)")
[ -x /usr/bin/chromium ] || missing+=("Chromium (headless, for the benchmark report test)")

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup:test-env: the Vulkan driver and Chromium the tests need are present, nothing to install"
  exit 0
fi
joined="$(printf '%s; ' "${missing[@]}")"
echo "setup:test-env: installing with apt-get: ${joined%; } (SLUICE_SKIP_TEST_SETUP=1 skips this)"
bash "$here/install-vulkan.sh"
bash "$here/install-chromium.sh"
