#!/usr/bin/env bash
# Installs Debian's chromium (used headless by the benchmark report test through playwright-core)
# when /usr/bin/chromium is missing. A no-op when it is present. No host name is written here:
# apt-get uses the machine's own package sources.
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  log "not a Debian-like system: install chromium at /usr/bin/chromium yourself (the report test needs it)"
  exit 0
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}
if ! as_root true; then
  log "need root (or passwordless sudo) to install chromium; the report test will fail without it"
  exit 0
fi

# Several setup scripts may run apt-get; wait for another apt/dpkg run to release its lock.
export DEBIAN_FRONTEND=noninteractive
apt_get() { as_root apt-get -o DPkg::Lock::Timeout=600 "$@"; }

log "installing chromium from the Debian archive"
if ! apt_get install -y --no-install-recommends chromium >/dev/null; then
  apt_get update >/dev/null
  apt_get install -y --no-install-recommends chromium >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
  log "chromium was installed but /usr/bin/chromium is missing"
  exit 1
fi
log "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
