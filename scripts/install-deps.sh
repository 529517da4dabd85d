#!/usr/bin/env bash
# Installs the Debian packages enclaveml needs, if any are missing.
# Idempotent: does nothing (and needs no network) when all are present.
#   scripts/install-deps.sh          build, test and demo dependencies
#   scripts/install-deps.sh --fuzz   also clang's libFuzzer runtime
set -euo pipefail

pkgs=(cmake make gcc pkg-config libcmocka-dev libdnnl-dev zlib1g-dev
      libssl-dev libseccomp-dev libpmem2-dev libzmq3-dev
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
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
echo "install-deps: done" >&2
