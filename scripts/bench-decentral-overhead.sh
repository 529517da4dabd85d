#!/usr/bin/env bash
# The whole-run overhead of decentralized nodes in sim enclaves over the
# same run in the clear (issue 12): 16 nodes, shards:2, each run twice,
# the two modes alternating, on this machine; prints run_seconds (without
# preparing data, keys and grants) and the ratio of the sums.
#
#   scripts/bench-decentral-overhead.sh BUILD [QUICK]
# QUICK=1: only the MLP on a ring (about a minute); otherwise also the
# CNN on regular:4 (about seven minutes on two cores).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
quick=${2:-0}
bin=$build/enclaveml
export ENCLAVEML_ENCLAVE=$build/enclaveml-enclave
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export ENCLAVEML_HOME=$tmp/home

one() { # mode cfg topology rounds -> run_seconds, accuracy, enclave RSS
  "$bin" decentral --cfg "$2" --nodes 16 --topology "$3" --partition shards:2 \
    --rounds "$4" --local-steps 20 --seed 1 --enclave "$1" --json \
    >"$tmp/r.json" 2>"$tmp/r.err" || { cat "$tmp/r.err" >&2; exit 1; }
  local s a
  s=$(grep -o '"run_seconds":[0-9.]*' "$tmp/r.json" | cut -d: -f2)
  a=$(grep -o '"mean_accuracy":[0-9.]*' "$tmp/r.json" | tail -1 | cut -d: -f2)
  echo "$s $a"
}

pair() { # cfg topology rounds
  local tn=0 ts=0 an as
  for rep in 1 2; do
    read -r n an < <(one none "$@")
    read -r s as < <(one sim "$@")
    echo "  $1 $2 $3 rounds, run $rep: none ${n} s, sim ${s} s (accuracy $an / $as)"
    tn=$(awk -v a="$tn" -v b="$n" 'BEGIN {print a + b}')
    ts=$(awk -v a="$ts" -v b="$s" 'BEGIN {print a + b}')
  done
  awk -v c="$1" -v t="$2" -v s="$ts" -v n="$tn" \
    'BEGIN {printf "  %s %s: sim / none = %.3f\n", c, t, s / n}'
}

echo "== decentralized: 16 nodes in sim enclaves over the baseline in the clear"
pair cfg/fmnist-mlp.cfg ring 30
[[ $quick == 1 ]] || pair cfg/fmnist-cnn.cfg regular:4 5
