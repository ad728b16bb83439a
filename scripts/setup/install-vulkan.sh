#!/usr/bin/env bash
# Gives a CPU-only Debian machine a Vulkan driver that Dawn (the `webgpu` npm package) accepts:
# Mesa's lavapipe >= 25. Debian 12's own Mesa 22 is rejected by Dawn, so on bookworm the
# backports suite is added, its mirror taken from the machine's own apt sources (no host is
# written here). Debian 13 and later have a recent enough Mesa in the main archive.
# A no-op when a usable driver (a GPU vendor's ICD, or lavapipe >= 25) is already installed.
# Run: bash scripts/setup/install-vulkan.sh [--check]
set -euo pipefail

min_mesa_major=25
icd_dirs=(/usr/share/vulkan/icd.d /etc/vulkan/icd.d)

log() { echo "install-vulkan: $*" >&2; }

mesa_major() {
  local version
  version="$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)"
  version="${version#*:}"
  echo "${version%%.*}"
}

usable_driver_present() {
  local icd found_lavapipe=0
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || return 1
  for dir in "${icd_dirs[@]}"; do
    for icd in "$dir"/*.json; do
      [ -e "$icd" ] || continue
      case "$(basename "$icd")" in
        lvp_icd*) found_lavapipe=1 ;;
        intel_*|radeon_*|nouveau_*|virtio_*|asahi_*|broadcom_*|freedreno_*|panfrost_*|powervr_*|gfxstream_*|dzn_*) ;;
        *) return 0 ;; # a vendor driver (nvidia, amd): use it
      esac
    done
  done
  [ "$found_lavapipe" = 1 ] || return 1
  local major
  major="$(mesa_major)"
  [ -n "$major" ] && [ "$major" -ge "$min_mesa_major" ]
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

# Prints a deb822 stanza for `suite`, copying URIs, Components and Signed-By from the first
# stanza of the machine's main Debian source (deb822 or one-line format).
backports_stanza() {
  local suite="$1" uris="" components="" signed_by=""
  local deb822=/etc/apt/sources.list.d/debian.sources
  if [ -f "$deb822" ]; then
    uris="$(awk '/^[[:space:]]*$/{if(seen)exit} /^URIs:/{seen=1; sub(/^URIs:[[:space:]]*/,""); print; exit}' "$deb822")"
    components="$(awk '/^[[:space:]]*$/{if(c)exit} /^Components:/{c=1; sub(/^Components:[[:space:]]*/,""); print; exit}' "$deb822")"
    signed_by="$(awk '/^[[:space:]]*$/{if(s)exit} /^Signed-By:/{s=1; sub(/^Signed-By:[[:space:]]*/,""); print; exit}' "$deb822")"
  fi
  if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
    uris="$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if($i ~ /^[a-z+]+:\/\//){print $i; exit}}' /etc/apt/sources.list)"
  fi
  if [ -z "$uris" ]; then
    log "cannot find the Debian archive in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    return 1
  fi
  echo "Types: deb"
  echo "URIs: $uris"
  echo "Suites: $suite"
  echo "Components: ${components:-main}"
  if [ -n "$signed_by" ]; then echo "Signed-By: $signed_by"; fi
}

# --check: only the exit status, 0 when a usable driver is installed (scripts/setup/test-env.sh asks).
if [ "${1:-}" = --check ]; then
  usable_driver_present
  exit
fi

if usable_driver_present; then
  log "a usable Vulkan driver is already installed (mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 'n/a'))"
  exit 0
fi

if [ ! -f /etc/os-release ] || ! command -v apt-get >/dev/null; then
  log "not a Debian-like system: install a Vulkan driver (Mesa lavapipe >= $min_mesa_major or a GPU driver) yourself"
  exit 0
fi
# shellcheck disable=SC1091
. /etc/os-release
if ! as_root true; then
  log "need root (or passwordless sudo) to install mesa-vulkan-drivers; WebGPU tests will have no adapter"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
packages=(mesa-vulkan-drivers libvulkan1)
case "${VERSION_CODENAME:-}" in
  bookworm)
    list=/etc/apt/sources.list.d/bookworm-backports-vulkan.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding the bookworm-backports suite ($list)"
      backports_stanza bookworm-backports | as_root tee "$list" >/dev/null
    fi
    as_root apt-get update -qq
    as_root apt-get install -y -qq -t bookworm-backports "${packages[@]}"
    ;;
  *)
    as_root apt-get update -qq
    as_root apt-get install -y -qq "${packages[@]}"
    ;;
esac

if usable_driver_present; then
  log "installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
else
  log "mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo '?') is older than $min_mesa_major: Dawn will reject it"
  # In CI the WebGPU tests must run, so this is an error there; elsewhere they skip with a message.
  if [ "${CI:-}" = true ]; then exit 1; fi
fi
