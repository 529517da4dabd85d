#!/usr/bin/env bash
# bench-ab-mirror.sh OLD_BUILD NEW_BUILD [ROUNDS]: section 6 of make bench
# (cfg/fmnist-cnn.cfg, 1 epoch, 1 thread, sim enclave, --mirror-every 1 on
# /dev/shm against no mirror) for two builds, interleaved in one run, so
# that a change to the enclave's mirror path is told from the machine's
# noise.  Each build gets its own platform home and data (their formats may
# differ); a build whose grant takes --recipient gets one.
#   git archive OLDREV | tar -x -C /tmp/old/src && cmake -S /tmp/old/src \
#     -B /tmp/old/build -DEML_TESTS=OFF && cmake --build /tmp/old/build
#   scripts/bench-ab-mirror.sh /tmp/old/build build
set -euo pipefail
rounds=${3:-2}
fm=/usr/share/datasets/fashion-mnist
cfg=$(cd "$(dirname "$0")/.." && pwd)/cfg/fmnist-cnn.cfg
tmp=$(mktemp -d)
pool=$(mktemp -u /dev/shm/eml-ab.XXXXXX)
trap 'rm -rf "$tmp" "$pool"' EXIT
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}
declare -A bin=([a]=$(cd "$1" && pwd)/enclaveml [b]=$(cd "$2" && pwd)/enclaveml)
for v in a b; do
  d=$tmp/$v b=${bin[$v]}
  mkdir -p "$d/data"
  export ENCLAVEML_HOME=$d/home ENCLAVEML_ENCLAVE=${b}-enclave
  "$b" keygen --out "$d/owner" 2>/dev/null
  "$b" keygen --out "$d/model" 2>/dev/null
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    "$b" encrypt --key "$d/owner.key" --in $fm/$f.gz --out "$d/data/$f.emlc" 2>/dev/null
  done
  extra=()
  "$b" grant --help | grep -q -- --recipient && extra=(--recipient "$d/model.pub")
  "$b" attest --out "$d/r.json" 2>/dev/null
  "$b" grant --key "$d/owner.key" --report "$d/r.json" --measurement "$("$b" measure)" \
    --allow-sim "${extra[@]}" --out "$d/g" 2>/dev/null
done
declare -A best
for ((r = 1; r <= rounds; r++)); do
  for v in a b; do
    for mode in plain mirror; do
      d=$tmp/$v
      export ENCLAVEML_HOME=$d/home ENCLAVEML_ENCLAVE=${bin[$v]}-enclave
      extra=()
      rm -f "$pool"
      [[ $mode == mirror ]] && extra=(--mirror "$pool" --mirror-every 1)
      out=$("${bin[$v]}" train --cfg "$cfg" --epochs 1 --threads 1 --data "$d/data" \
        --grant "$d/g" --recipient "$d/model.pub" --out "$d/m.emlm" --json --quiet "${extra[@]}")
      ips=$(printf '%s' "$out" | sed -n 's/.*"images_per_second":\([0-9.e+-]*\).*/\1/p')
      echo "  round $r, build $v ($1 / $2), $mode: $ips images/s"
      k=$v-$mode
      best[$k]=$(awk -v a="${best[$k]:-0}" -v b="$ips" 'BEGIN { print (b > a) ? b : a }')
    done
  done
done
for v in a b; do
  awk -v v="$v" -v p="${best[$v-plain]}" -v m="${best[$v-mirror]}" 'BEGIN {
    printf "  build %s: best plain %.0f, best mirror %.0f images/s: --mirror-every 1 costs %.1f%%\n", v, p, m, 100 * (p - m) / p }'
done
