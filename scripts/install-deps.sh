#!/usr/bin/env bash
# Installs the Debian packages enclaveml needs, if any are missing.
# Idempotent: does nothing (and needs no network) when all are present.
#   scripts/install-deps.sh          build, test and demo dependencies
#   scripts/install-deps.sh --fuzz   also clang's libFuzzer runtime
set -euo pipefail

pkgs=(cmake make gcc pkg-config libcmocka-dev libdnnl-dev zlib1g-dev
      libssl-dev libseccomp-dev libpmem2-dev libzmq3-dev curl wrk
      redis-server libhiredis-dev
      dataset-fashion-mnist)
if [[ "${1:-}" == "--fuzz" ]]; then
  pkgs+=(clang libclang-rt-14-dev libomp-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
updated=0
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  updated=1
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  echo "install-deps: done" >&2
fi

# Darknet's own cfg files, the engine's test data (tests/test_darknet.c):
# unpacked from Debian's darknet package, not installed (installing it
# would drag in OpenCV).
darknet=/usr/local/share/enclaveml/darknet
if [[ ! -f $darknet/cfg/resnet50.cfg ]]; then
  echo "install-deps: unpacking Darknet's cfg files into $darknet" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  [[ $updated == 1 ]] || $SUDO apt-get update -qq
  (cd "$tmp" && apt-get download darknet >/dev/null 2>&1 &&
    dpkg -x darknet_*.deb x)
  $SUDO mkdir -p "$darknet"
  $SUDO cp -r "$tmp/x/usr/share/darknet/cfg" "$darknet/"
  $SUDO chmod -R a+rX "$darknet"
fi
