#!/usr/bin/env bash
# test_outsource_cli.sh BIN SRCDIR BUILDDIR - `--outsource` end to end,
# with a real `enclaveml worker` process on a unix socket and on loopback
# TCP: training, evaluation and prediction through it agree with the same
# runs alone; the JSON figures are there; a fault-injecting proxy between
# client and worker (tests/worker_proxy.c, a test program) gets every
# fault caught with the one verification line, no model written and the
# mirror at its last committed state; a worker that dies is an error
# naming its address; confidential training in the sim enclave through the
# worker (WORKER ocalls) with grants that allow it, and refused with one
# that does not; private mode (the default): predict and eval agree with
# fp32, a canary image watched on the link never appears (and does in
# integrity mode), training is refused before anything is sent; bad
# options are one error line each.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$2" && pwd)
builddir=$(cd "$3" && pwd)
proxy_bin=$builddir/tests/worker_proxy
fm=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"

d=$tmp/data
mkdir -p "$d"
mkidx $fm/train-images-idx3-ubyte.gz $d/train-images-idx3-ubyte 640 784 3
mkidx $fm/train-labels-idx1-ubyte.gz $d/train-labels-idx1-ubyte 640 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz $d/t10k-images-idx3-ubyte 400 784 3
mkidx $fm/t10k-labels-idx1-ubyte.gz $d/t10k-labels-idx1-ubyte 400 1 1
cfg=$src/cfg/fmnist-cnn.cfg

# start NAME CMD...: starts a server that prints its address on stdout;
# sets $addr (waits at most 10 s).
start() {
  local name=$1
  shift
  "$@" >"$tmp/$name.addr" 2>"$tmp/$name.err" &
  pids+=($!)
  last_pid=$!
  for _ in $(seq 100); do
    [[ -s $tmp/$name.addr ]] && break
    sleep 0.1
  done
  addr=$(head -1 "$tmp/$name.addr")
}

start unix "$bin" worker --listen "unix:$tmp/w.sock" --threads 1 --quiet
uaddr=$addr
start tcp "$bin" worker --listen tcp:127.0.0.1:0 --threads 1 --quiet
taddr=$addr
[[ $uaddr == unix:* && $taddr == tcp:127.0.0.1:* ]] &&
  ok "workers listening on $uaddr and $taddr" ||
  bad "workers did not start: '$uaddr' '$taddr' $(cat "$tmp"/*.err)"

field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$2"; }

# ---- training: the same seed alone and through each worker
train() { # out-name extra...
  local name=$1
  shift
  timeout 600 "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --batch 64 \
    --seed 5 --threads 1 --quiet --json --out "$tmp/$name.safetensors" \
    "$@" >"$tmp/$name.json" 2>"$tmp/$name.err"
}
train alone
for w in "$uaddr" "$taddr"; do
  n=$([[ $w == unix:* ]] && echo u || echo t)
  if train out-$n --outsource "$w" --outsource-mode integrity; then
    a=$(field test_accuracy "$tmp/alone.json")
    b=$(field test_accuracy "$tmp/out-$n.json")
    prods=$(field outsourced_products "$tmp/out-$n.json")
    ver=$(field verified_products "$tmp/out-$n.json")
    if awk -v a="$a" -v b="$b" 'BEGIN { exit !(a - b < 0.003 && b - a < 0.003) }' &&
       [[ $prods -gt 0 && $prods == "$ver" ]] &&
       grep -q '"bytes_to_worker":' "$tmp/out-$n.json" &&
       grep -q '"enclave_cpu_seconds":' "$tmp/out-$n.json" &&
       grep -q '"worker_seconds":' "$tmp/out-$n.json" &&
       grep -q "\"worker\":\"$w\"" "$tmp/out-$n.json"; then
      ok "train via $w: accuracy $b against $a alone, $prods products all verified"
    else
      bad "train via $w: $(cat "$tmp/out-$n.json" "$tmp/alone.json")"
    fi
  else
    bad "train via $w failed: $(cat "$tmp/out-$n.err")"
  fi
done

# ---- inference: predictions and accuracy through the worker
w8=$tmp/alone.safetensors
"$bin" predict --cfg "$cfg" --weights "$w8" --images "$d/t10k-images-idx3-ubyte" \
  --threads 1 >"$tmp/p-alone" 2>/dev/null
if "$bin" predict --cfg "$cfg" --weights "$w8" \
     --images "$d/t10k-images-idx3-ubyte" --threads 1 \
     --outsource "$uaddr" --outsource-mode integrity >"$tmp/p-out" 2>"$tmp/p.err"; then
  agree=$(paste "$tmp/p-alone" "$tmp/p-out" | awk '$2 == $4 {a++} END {print a + 0}')
  total=$(wc -l <"$tmp/p-alone")
  if [[ $total -eq 400 && $((agree * 1000)) -ge $((total * 995)) ]]; then
    ok "predict via the worker agrees with fp32 on $agree of $total images"
  else
    bad "predict via the worker agrees on $agree of $total"
  fi
else
  bad "predict via the worker failed: $(cat "$tmp/p.err")"
fi
if "$bin" eval --cfg "$cfg" --weights "$w8" --data "$d" --threads 1 --json \
     --outsource "$taddr" --outsource-mode integrity >"$tmp/e.json" 2>"$tmp/e.err" &&
   grep -q '"verified_products":' "$tmp/e.json"; then
  ok "eval via the worker: $(field test_accuracy "$tmp/e.json")"
else
  bad "eval via the worker: $(cat "$tmp/e.json" "$tmp/e.err")"
fi

# ---- private mode (the default), inference: pads on every data operand
if "$bin" predict --cfg "$cfg" --weights "$w8" \
     --images "$d/t10k-images-idx3-ubyte" --threads 1 \
     --outsource "$uaddr" >"$tmp/p-priv" 2>"$tmp/p.err"; then
  agree=$(paste "$tmp/p-alone" "$tmp/p-priv" | awk '$2 == $4 {a++} END {print a + 0}')
  total=$(wc -l <"$tmp/p-alone")
  if [[ $total -eq 400 && $((agree * 1000)) -ge $((total * 995)) ]]; then
    ok "private predict agrees with fp32 on $agree of $total images"
  else
    bad "private predict agrees on $agree of $total"
  fi
else
  bad "private predict failed: $(cat "$tmp/p.err")"
fi
if "$bin" eval --cfg "$cfg" --weights "$w8" --data "$d" --threads 1 --json \
     --outsource "$taddr" --outsource-mode private >"$tmp/e.json" 2>"$tmp/e.err" &&
   grep -q '"outsource_mode":"private"' "$tmp/e.json" &&
   grep -q '"precompute_cpu_seconds":' "$tmp/e.json" &&
   [[ $(field outsourced_products "$tmp/e.json") == $(field verified_products "$tmp/e.json") ]]; then
  ok "private eval via TCP: accuracy $(field test_accuracy "$tmp/e.json"), $(field verified_products "$tmp/e.json") products verified"
else
  bad "private eval: $(cat "$tmp/e.json" "$tmp/e.err")"
fi
# The canary: test image 0 watched on the link by a proxy.  It is there
# in integrity mode (the control: the watch finds it) and never in private
# mode.
if [[ -x $proxy_bin ]]; then
  seen=()
  for mode in integrity private; do
    start "canary-$mode" "$proxy_bin" --listen "unix:$tmp/c-$mode.sock" \
      --to "$uaddr" --fault none --every 1 --seed 1 \
      --canary "$d/t10k-images-idx3-ubyte:0"
    "$bin" predict --cfg "$cfg" --weights "$w8" --limit 64 \
      --images "$d/t10k-images-idx3-ubyte" --threads 1 \
      --outsource "$addr" --outsource-mode $mode >/dev/null 2>"$tmp/c.err" ||
      bad "predict through the canary proxy ($mode): $(cat "$tmp/c.err")"
    kill "$last_pid" 2>/dev/null
    wait "$last_pid" 2>/dev/null
    seen+=("$(grep -c "canary row" "$tmp/canary-$mode.err")")
  done
  if [[ ${seen[0]} -gt 0 && ${seen[1]} -eq 0 ]]; then
    ok "canary image: on the integrity link in ${seen[0]} requests, never on the private link"
  else
    bad "canary image: integrity ${seen[0]}, private ${seen[1]} requests"
  fi
fi
expect_error "private mode does not train" "private does not train" \
  "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --outsource "$uaddr"

# ---- faults: a proxy corrupts replies; every run stops with the line
if [[ -x $proxy_bin ]]; then
  # The last run's fault comes late (product 40, in step 3), after the
  # checkpoint of steps 1 and 2 is committed.
  i=0
  for kind in flip scale-row swap replay truncate flip; do
    i=$((i + 1))
    every=7
    [[ $i -eq 6 ]] && every=40
    start "proxy-$kind" "$proxy_bin" --listen "unix:$tmp/p$i.sock" \
      --to "$uaddr" --fault "$kind" --every $every --seed $i
    rm -f "$tmp/f.safetensors" "$tmp/f.ckpt"
    timeout 300 "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --batch 64 \
      --seed 5 --threads 1 --quiet --out "$tmp/f.safetensors" \
      --checkpoint "$tmp/f.ckpt" --checkpoint-every 1 \
      --outsource "$addr" --outsource-mode integrity >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [[ $rc -ne 0 && $rc -lt 124 && $(wc -l <"$tmp/err") -eq 1 ]] &&
       grep -q '^enclaveml: error: worker result failed verification (layer [0-9]*, ' "$tmp/err" &&
       [[ ! -e $tmp/f.safetensors ]]; then
      ok "fault '$kind' (every $every) caught: $(cat "$tmp/err")"
    else
      bad "fault '$kind': rc=$rc, $(cat "$tmp/err"), model there: $([[ -e $tmp/f.safetensors ]] && echo yes)"
    fi
    kill "$last_pid" 2>/dev/null
  done
  # The mirror kept its last committed state: a resume without the proxy
  # goes on from it and finishes.
  if timeout 600 "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --batch 64 \
       --seed 5 --threads 1 --quiet --json --out "$tmp/f.safetensors" \
       --checkpoint "$tmp/f.ckpt" --checkpoint-every 1 --resume \
       --outsource "$uaddr" --outsource-mode integrity >"$tmp/r.json" 2>"$tmp/r.err" &&
     [[ $(field resumed_step "$tmp/r.json") -gt 0 ]]; then
    ok "after a caught fault the checkpoint resumes from step $(field resumed_step "$tmp/r.json")"
  else
    bad "resume after a fault: $(cat "$tmp/r.json" "$tmp/r.err")"
  fi
else
  bad "no $proxy_bin"
fi

# ---- a worker that dies: an error naming its address, no hang
start dying "$bin" worker --listen "unix:$tmp/dying.sock" --threads 1 --quiet \
  --max-requests 3
timeout 120 "$bin" train --cfg "$cfg" --data "$d" --epochs 1 --batch 64 \
  --threads 1 --quiet --outsource "$addr" --outsource-mode integrity \
  >"$tmp/out" 2>"$tmp/err"
rc=$?
if [[ $rc -ne 0 && $rc -lt 124 ]] && grep -q "$tmp/dying.sock" "$tmp/err"; then
  ok "a worker that goes away: $(cat "$tmp/err")"
else
  bad "a worker that goes away: rc=$rc $(cat "$tmp/err")"
fi
expect_error "a worker that is not there" "$tmp/none.sock" \
  "$bin" eval --cfg "$cfg" --weights "$w8" --data "$d" \
  --outsource "unix:$tmp/none.sock" --outsource-mode integrity

# ---- from the enclave: grants must allow it; the report says so
export ENCLAVEML_HOME=$tmp/home
c=$tmp/conf
mkdir -p "$c/data"
(
  cd "$c" || exit 1
  "$bin" keygen --out owner --quiet 2>/dev/null
  "$bin" keygen --out model --quiet 2>/dev/null
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte \
           t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    "$bin" encrypt --key owner.key --in "$d/$f" --out "data/$f.emlc" --quiet
  done
  m=$("$bin" measure)
  "$bin" attest --out r.json 2>/dev/null
  for g in yes no; do
    extra=()
    [[ $g == yes ]] && extra=(--allow-outsource)
    "$bin" grant --key owner.key --report r.json --measurement "$m" \
      --allow-sim --recipient model.pub --out "$g.grant" "${extra[@]}" 2>/dev/null
  done
)
conf() { # grant out extra...
  local g=$1 o=$2
  shift 2
  timeout 600 "$bin" train --cfg "$cfg" --data "$c/data" --grant "$c/$g.grant" \
    --recipient "$c/model.pub" --out "$c/$o.emlm" --report-out "$c/$o.json" \
    --epochs 1 --batch 64 --threads 1 --quiet "$@"
}
if conf yes out --outsource "$uaddr" --outsource-mode integrity \
     >"$tmp/out" 2>"$tmp/err" &&
   grep -q '"outsource":"integrity"' "$c/out.json" &&
   grep -q "\"worker\":\"$uaddr\"" "$c/out.json" &&
   "$bin" verify "$c/out.json" --report "$c/r.json" --allow-sim \
     --measurement "$("$bin" measure)" --model "$c/out.emlm" \
     --recipient "$c/model.pub" >/dev/null 2>"$tmp/verr"; then
  ok "confidential training in the sim enclave through the worker: $(sed -n 's/.*\("verified_products":[0-9]*\).*/\1/p' "$c/out.json"), the signed report verifies"
else
  bad "confidential outsourced training: $(cat "$tmp/err" "$tmp/verr" "$c/out.json" 2>/dev/null)"
fi
expect_error "a grant that does not allow outsourcing" "does not allow outsourcing" \
  conf no refused --outsource "$uaddr" --outsource-mode integrity
[[ ! -e $c/refused.emlm ]] && ok "no model from the refused run" ||
  bad "a model file from the refused run"

expect_error "private mode in a confidential run" "private does not train" \
  conf yes refused --outsource "$uaddr"
[[ ! -e $c/refused.emlm ]] && ok "no model from the refused run" ||
  bad "a model file from the refused run"

# ---- options
expect_error "an unknown mode" "--outsource-mode" \
  "$bin" eval --cfg "$cfg" --weights "$w8" --data "$d" --outsource "$uaddr" \
  --outsource-mode secret

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
