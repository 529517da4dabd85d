#!/usr/bin/env bash
# test_crash.sh BIN SRCDIR [TRIALS] - crash injection for the training-state
# mirror: training with `--mirror` (and `--checkpoint`) is killed with
# SIGKILL at random moments, resumed with `--resume` (and killed again, up to
# three times per trial), and must always resume from a committed state (the
# step it continues from never goes back) and end with weights
# byte-identical to a run that was never interrupted
# (`--kernels ref --threads 1 --seed S`).
#
# Trials alternate between a pool on /dev/shm (emulated persistent memory),
# a pool on disk, and a disk checkpoint.  TRIALS defaults to 30 (`make
# test`); `make crashtest` runs 300.  The net is small (51K parameters, 1000
# images, 4 epochs: 200 steps) so a trial takes about a second.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
trials=${3:-30}
fm=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
shm=$(mktemp -d /dev/shm/enclaveml-crash.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp" "$shm"' EXIT
export ENCLAVEML_HOME=$tmp/home
export LC_ALL=C
# shellcheck source=tests/lib.sh
. "$(cd "$2" && pwd)/tests/lib.sh"

d=$tmp/data
mkdir -p "$d"
mkidx $fm/train-images-idx3-ubyte.gz $d/train-images-idx3-ubyte 1000 784 3
mkidx $fm/train-labels-idx1-ubyte.gz $d/train-labels-idx1-ubyte 1000 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz $d/t10k-images-idx3-ubyte 200 784 3
mkidx $fm/t10k-labels-idx1-ubyte.gz $d/t10k-labels-idx1-ubyte 200 1 1
cfg=$tmp/tiny.cfg
cat >"$cfg" <<'EOF'
[net]
batch=20
height=28
width=28
channels=1
learning_rate=0.05
momentum=0.9
decay=0.0005
epochs=4

[connected]
output=64
activation=relu

[dropout]
probability=0.2

[connected]
output=10
activation=linear

[softmax]
EOF
run() { # run OUT ARGS...: the reference command line (exec'd, so that a
  # backgrounded `(run ...) &` is the enclaveml process itself)
  local out=$1
  shift
  exec "$bin" train --cfg "$cfg" --data "$d" --kernels ref --threads 1 \
    --seed 7 --out "$out" "$@"
}

# The uninterrupted run, timed to spread the kills over a whole run.
t0=$(date +%s%N)
(run "$tmp/ref.safetensors" --quiet) || { echo "FAIL: reference run"; exit 1; }
t1=$(date +%s%N)
ref_ms=$(((t1 - t0) / 1000000))
# A mirrored run takes longer than a plain one (one save per step).
t0=$(date +%s%N)
(run "$tmp/m.safetensors" --quiet --mirror "$shm/timing.pool") ||
  { echo "FAIL: mirrored run"; exit 1; }
t1=$(date +%s%N)
shm_ms=$(((t1 - t0) / 1000000))
rm -f "$shm/timing.pool"
t0=$(date +%s%N)
(run "$tmp/m.safetensors" --quiet --mirror "$tmp/timing.pool") ||
  { echo "FAIL: mirrored run on disk"; exit 1; }
t1=$(date +%s%N)
disk_ms=$(((t1 - t0) / 1000000))
rm -f "$tmp/timing.pool"
if cmp -s "$tmp/ref.safetensors" "$tmp/m.safetensors"; then
  ok "a mirrored run ends with the plain run's weights (${ref_ms} ms plain, ${shm_ms} ms mirrored on /dev/shm, ${disk_ms} ms on disk)"
else
  bad "a mirrored run changed the weights"
fi

RANDOM=$$
for ((t = 1; t <= trials; t++)); do
  case $((t % 3)) in
    1) store=(--mirror "$shm/t$t.pool"); what="pool on /dev/shm"; span=$shm_ms ;;
    2) store=(--mirror "$tmp/t$t.pool"); what="pool on disk"; span=$disk_ms ;;
    0) store=(--checkpoint "$tmp/t$t.ckpt"); what="checkpoint"; span=$disk_ms ;;
  esac
  kills=$((1 + RANDOM % 3))
  last=-1
  log=""
  good=1
  for ((k = 0; k <= kills; k++)); do
    out=$tmp/t$t.safetensors
    rm -f "$out"
    (run "$out" "${store[@]}" --resume) 2>"$tmp/err" >/dev/null &
    pid=$!
    if ((k < kills)); then
      # Somewhere in a run, including start-up and the end.
      delay=$((RANDOM % (span + span / 5 + 1)))
      sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
      kill -9 $pid 2>/dev/null
    fi
    wait $pid 2>/dev/null
    rc=$?
    # What the resume said: "continuing from step N", or a fresh start.
    from=$(sed -n 's/^resume: continuing from step \([0-9]*\) .*/\1/p' "$tmp/err")
    if grep -q '^resume: the mirror holds no committed state' "$tmp/err"; then
      from=-1
    fi
    if grep -q 'enclaveml: error' "$tmp/err"; then
      good=0
      log="$log; attempt $k failed: $(grep -a 'enclaveml: error' "$tmp/err")"
    fi
    if [[ -n $from ]]; then
      if ((from < last)); then
        good=0
        log="$log; resumed at $from after $last"
      fi
      last=$from
      log="$log $from"
    fi
    if ((k == kills)) && ((rc != 0)); then
      good=0
      log="$log; final run rc=$rc"
    fi
  done
  if ((good)) && cmp -s "$tmp/ref.safetensors" "$tmp/t$t.safetensors"; then
    ok "trial $t ($what, $kills kills, resumed at:$log)"
  else
    bad "trial $t ($what, $kills kills, resumed at:$log): weights differ or a resume failed"
  fi
  rm -f "$shm/t$t.pool" "$tmp/t$t.pool" "$tmp/t$t.ckpt" "$tmp/t$t.ckpt.tmp"
done

echo "test_crash: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
