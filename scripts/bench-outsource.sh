#!/usr/bin/env bash
# bench-outsource.sh BUILD [QUICK] - make bench, section 7: what
# --outsource takes off the enclave's CPU.  The "enclave" here is the
# training (or prediction) process; the worker is another process, started
# on a unix socket and stopped at the end.  Reported: the trainer's CPU
# seconds per step alone and with --outsource integrity (their ratio is
# the speed-up ceiling a fast worker allows), wall seconds (the CPU worker
# shares this machine's cores, so no wall speed-up is expected here), bytes
# on the link per step, and accuracy.
set -eu
build=$(cd "${1:-build}" && pwd)
quick=${2:-0}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$build/enclaveml
src=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
wpid=
trap '[ -n "$wpid" ] && kill "$wpid" 2>/dev/null; rm -rf "$tmp"' EXIT
source "$here/tests/lib.sh"
n=2048; nt=1000
[ "$quick" = 1 ] && n=512 && nt=256
d=$tmp/data; mkdir -p "$d"
mkidx $src/train-images-idx3-ubyte.gz $d/train-images-idx3-ubyte $n 784 3
mkidx $src/train-labels-idx1-ubyte.gz $d/train-labels-idx1-ubyte $n 1 1
mkidx $src/t10k-images-idx3-ubyte.gz $d/t10k-images-idx3-ubyte $nt 784 3
mkidx $src/t10k-labels-idx1-ubyte.gz $d/t10k-labels-idx1-ubyte $nt 1 1
"$bin" worker --listen "unix:$tmp/w.sock" --threads 1 --quiet >"$tmp/w.addr" &
wpid=$!
for i in $(seq 50); do [ -s "$tmp/w.addr" ] && break; sleep 0.1; done
cfg=$here/cfg/fmnist-cnn.cfg
steps=$(( (n + 127) / 128 ))
field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
# cpu SECONDS-OF-CHILDREN CMD...: runs CMD, prints its stdout, and the CPU
# seconds (user + sys) it used to $tmp/cpu.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
cpu() {
  ( "$@" >"$tmp/out"
    times >"$tmp/times" )
  awk 'NR == 2 { split($1, u, "m"); split($2, s, "m");
    printf "%.3f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$tmp/times" >"$tmp/cpu"
  cat "$tmp/out"
}
# Training: alone; every product outsourced (integrity); only products
# of at least $MIN FLOPs per element the client handles (the others stay
# in the enclave: --outsource-min-intensity).
MIN=${MIN:-100}
for mode in alone outsourced selective; do
  extra=()
  [ $mode != alone ] && extra=(--outsource "unix:$tmp/w.sock" --outsource-mode integrity)
  [ $mode = selective ] && extra+=(--outsource-min-intensity "$MIN")
  s=$(date +%s.%N)
  out=$(cpu "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --batch 128 \
        --threads 1 --seed 1 --json --quiet --out "$tmp/w-$mode.safetensors" "${extra[@]}")
  e=$(date +%s.%N)
  c=$(cat "$tmp/cpu")
  acc=$(printf '%s' "$out" | field test_accuracy)
  to=$(printf '%s' "$out" | field bytes_to_worker)
  fr=$(printf '%s' "$out" | field bytes_from_worker)
  loc=$(printf '%s' "$out" | field local_products)
  printf '  train %-10s %6.3f CPU s/step, %6.3f wall s/step, test accuracy %s%s%s\n' \
    $mode "$(calc "$c / $steps")" "$(calc "($e - $s) / $steps")" "$acc" \
    "${to:+, $(calc "($to + $fr) / $steps / 1048576") MiB/step on the link}" \
    "${loc:+, $loc products kept in the enclave}"
  echo "$c" >"$tmp/train-$mode"
done
printf '  training: CPU per step alone / outsourced = %.2fx (the speed-up ceiling), with --outsource-min-intensity %s: %.2fx\n' \
  "$(calc "$(cat "$tmp/train-alone") / $(cat "$tmp/train-outsourced")")" "$MIN" \
  "$(calc "$(cat "$tmp/train-alone") / $(cat "$tmp/train-selective")")"
# Against plain-C kernels (--kernels ref, no SIMD library: the kind of
# enclave code Slalom measured its 6-20x against), all products
# outsourced.
for mode in alone outsourced; do
  extra=()
  [ $mode != alone ] && extra=(--outsource "unix:$tmp/w.sock" --outsource-mode integrity)
  cpu "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --batch 128 --kernels ref \
    --threads 1 --seed 1 --json --quiet --out "$tmp/r-$mode.safetensors" "${extra[@]}" >/dev/null
  cp "$tmp/cpu" "$tmp/ref-$mode"
done
printf '  training on the ref kernels: %.3f CPU s/step alone, %.3f outsourced: %.2fx\n' \
  "$(calc "$(cat "$tmp/ref-alone") / $steps")" "$(calc "$(cat "$tmp/ref-outsourced") / $steps")" \
  "$(calc "$(cat "$tmp/ref-alone") / $(cat "$tmp/ref-outsourced")")"
# Inference: alone, integrity, private.  Private mode's CPU splits into
# the pads' work (drawing pads, their products with the weights: Slalom's
# offline phase, precompute_cpu_seconds) and the rest (online).
for mode in alone integrity selective private; do
  extra=()
  case $mode in
    integrity|private) extra=(--outsource "unix:$tmp/w.sock" --outsource-mode $mode --json) ;;
    selective) extra=(--outsource "unix:$tmp/w.sock" --outsource-mode integrity --json
                      --outsource-min-intensity "$MIN") ;;
  esac
  cpu "$bin" predict --cfg "$cfg" --weights "$tmp/w-alone.safetensors" \
    --images "$d/t10k-images-idx3-ubyte" --threads 1 --batch 128 "${extra[@]}" >"$tmp/pred-$mode"
  cp "$tmp/cpu" "$tmp/pcpu-$mode"
  if [ $mode != alone ]; then # the JSON's predictions as "i<TAB>label" lines
    pre=$(field precompute_cpu_seconds <"$tmp/pred-$mode")
    echo "${pre:-0}" >"$tmp/pre-$mode"
    sed -n 's/.*"predictions":\[\([^]]*\)\].*/\1/p' "$tmp/pred-$mode" |
      tr ',' '\n' | awk '{ printf "%d\t%s\n", NR - 1, $1 }' >"$tmp/pred-$mode.txt"
    mv "$tmp/pred-$mode.txt" "$tmp/pred-$mode"
  fi
  printf '  predict %-10s %6.3f CPU s for %d images%s\n' $mode "$(cat "$tmp/pcpu-$mode")" $nt \
    "$([ $mode = private ] && printf ' (pads and their products %.3f, online %.3f)' \
        "$(cat "$tmp/pre-private")" "$(calc "$(cat "$tmp/pcpu-private") - $(cat "$tmp/pre-private")")")"
done
for mode in integrity selective private; do
  agree=$(paste "$tmp/pred-alone" "$tmp/pred-$mode" | awk '$2 == $4 {a++} END {printf "%.2f", 100 * a / NR}')
  printf '  inference, %s: CPU alone / outsourced = %.2fx; predictions agree with fp32 on %s%% of %d images\n' \
    $mode "$(calc "$(cat "$tmp/pcpu-alone") / $(cat "$tmp/pcpu-$mode")")" "$agree" $nt
done
printf '  inference, private, online only (pads made ahead): CPU alone / online = %.2fx\n' \
  "$(calc "$(cat "$tmp/pcpu-alone") / ($(cat "$tmp/pcpu-private") - $(cat "$tmp/pre-private"))")"
