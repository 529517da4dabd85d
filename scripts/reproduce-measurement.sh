#!/usr/bin/env bash
# reproduce-measurement.sh [REV]: builds the enclave program of one commit
# twice, from two copies of the source at different paths into two build
# directories, and checks that the two programs are byte-identical, i.e.
# that neither the build machine's paths nor its CPU enter the measured
# image.  Prints the program's SHA-256 (what `enclaveml measure --files`
# lists for it).  A verifier runs this on a machine with the same Debian
# package versions (docs/enclave.md, "Reproducing the measurement").
set -euo pipefail
rev=${1:-HEAD}
top=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sums=()
for d in a b/a-longer-path; do
  mkdir -p "$work/$d/src"
  git -C "$top" archive "$rev" | tar -x -C "$work/$d/src"
  cmake -S "$work/$d/src" -B "$work/$d/build" -DCMAKE_BUILD_TYPE=Release \
    -DEML_TESTS=OFF >/dev/null
  cmake --build "$work/$d/build" --target enclaveml-enclave -j"$(nproc)" \
    >/dev/null
  sums+=("$(sha256sum "$work/$d/build/enclaveml-enclave" | cut -c1-64)")
  echo "$d: ${sums[-1]}"
done
if [[ ${sums[0]} == "${sums[1]}" ]]; then
  echo "reproducible: enclaveml-enclave of $(git -C "$top" rev-parse --short "$rev") is ${sums[0]}"
else
  echo "NOT reproducible: the two builds differ" >&2
  exit 1
fi
