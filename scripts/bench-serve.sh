#!/usr/bin/env bash
# bench-serve.sh BUILD [QUICK] - the attested inference server under load
# (make bench section 10; docs/BENCHMARKS.md, issue 14).  wrk posts
# predict requests over HTTPS to `enclaveml serve` on loopback:
#   a. fmnist-cnn, 64 connections: the sim enclave (TLS inside it) and the
#      same server with --enclave none, alternated, two rounds each:
#      requests/s, latency p50/p99, errors and non-2xx; sim over none;
#   b. Darknet's ResNet-50 (random weights, 256x256x3 images as raw uint8
#      bodies), 16 connections, batches of 16: int8 over fp32;
#   c. hostile clients (scripts/hostile-clients.py: slowloris, oversized
#      headers and bodies, garbage TLS) beside wrk's 64 connections: p99
#      with them over p99 without, same server;
#   d. the queue: a front end with --queue, two serve-workers and a real
#      redis-server; wrk runs while one worker is SIGKILLed: failed
#      requests, requests answered once, the recovery time.
# EML_SERVE_PARTS (default "a b c d") picks parts.  Everything it starts
# listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
quick=${2:-0}
parts=${EML_SERVE_PARTS:-a b c d}
want() { [[ " $parts " == *" $1 "* ]]; }
bin=$build/enclaveml
src=$(cd "$(dirname "$0")/.." && pwd)
dur=$([[ $quick == 1 ]] && echo 8s || echo 60s)
dur_rn=$([[ $quick == 1 ]] && echo 8s || echo 30s)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export ENCLAVEML_HOME=$tmp/home
export ENCLAVEML_ENCLAVE=$build/enclaveml-enclave
cd "$tmp"
if ! command -v wrk >/dev/null; then
  echo "wrk is not installed (scripts/install-deps.sh): skipped"
  exit 0
fi

# setup CFG WEIGHTS NAME: encrypt and grant (one owner key, the enclave's
# measurement for each backend)
"$bin" keygen --out owner --quiet 2>/dev/null
heap=2048
grant_for() { # CFG BACKEND OUT (for the enclave of heap MiB)
  local m
  m=$("$bin" measure --enclave "$2" --heap-mb $heap)
  "$bin" attest --enclave "$2" --heap-mb $heap --out "r-$2.json" 2>/dev/null
  "$bin" grant --key owner.key --report "r-$2.json" --measurement "$m" \
    --allow-sim --allow-none --recipient owner.pub \
    --cfg-digest "$(sha256sum "$1" | cut -c1-64)" --out "$3" 2>/dev/null
}

# serve CFG MODEL GRANT BACKEND PRECISION MAXBATCH: starts a server, sets $addr
serve() {
  rm -f ready
  "$bin" serve --cfg "$1" --model "$2" --grant "$3" --enclave "$4" \
    --precision "$5" --max-batch "$6" --max-wait-ms 2 --max-conns 512 \
    --heap-mb $heap \
    --listen tcp:127.0.0.1:0 --ready-file ready --threads 2 --quiet &
  pids+=($!)
  server=$!
  for _ in $(seq 1 300); do [[ -s ready ]] && break; sleep 0.1; done
  addr=$(cut -d' ' -f1 ready)
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; }

# load CONNS DUR [BODY [TYPE]]: wrk's summary as "rps p50 p99 errors
# non2xx" (WRK_TIMEOUT: wrk's --timeout, default 2s)
load() {
  local out
  out=$(WRK_BODY=${3:-} WRK_TYPE=${4:-} wrk -t2 -c"$1" -d"$2" --latency \
    --timeout "${WRK_TIMEOUT:-2s}" \
    -s "$src/scripts/wrk-predict.lua" "https://${addr#tcp:}" 2>&1)
  local rps p50 p99 err non
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  err=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
  non=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p50 $p99 ${err:-0} ${non:-0}"
}

# ---- a. fmnist-cnn: sim against none
cnn=$src/cfg/fmnist-cnn.cfg
"$bin" train --cfg "$cnn" --epochs 1 --threads 2 --out cnn.safetensors \
  --quiet 2>/dev/null
"$bin" encrypt --key owner.key --in cnn.safetensors --role model \
  --out cnn.emlc --quiet
grant_for "$cnn" sim g-sim
grant_for "$cnn" none g-none
# ms VALUE: wrk's "812.00us", "12.61ms" or "1.20s" in ms
ms() {
  awk -v v="$1" 'BEGIN { u = v; sub(/^[0-9.]+/, "", u); x = v + 0;
    if (u == "us") x /= 1000; else if (u == "s") x *= 1000; print x }'
}

declare -A sum
want a && echo "fmnist-cnn, 64 connections, $dur each, 2 server threads, wrk -t2:"
want a && for round in 1 2; do
  for be in none sim; do
    serve "$cnn" cnn.emlc "g-$be" $be fp32 64
    r=$(load 64 "$dur")
    stop
    echo "  round $round, --enclave $be: $r (requests/s, p50, p99, socket errors, non-2xx)"
    sum[$be]=$(awk -v a="${sum[$be]:-0}" -v b="${r%% *}" 'BEGIN {print a + b}')
  done
done
want a && awk -v s="${sum[sim]}" -v n="${sum[none]}" \
  'BEGIN { printf "  sim over none (sums of the rounds): %.3f\n", s / n }'

# ---- c. hostile clients beside wrk
dur_h=$([[ $quick == 1 ]] && echo 8 || echo 30)
if want c; then
  echo "fmnist-cnn (sim), wrk 64 connections, ${dur_h} s; then the same beside hostile clients (200 slowloris connections, 9000-byte headers, 1 GB bodies, garbage TLS):"
  serve "$cnn" cnn.emlc g-sim sim fp32 64
  hp=${addr#tcp:}
  for round in 1 2; do
    calm=$(load 64 "${dur_h}s")
    python3 "$src/scripts/hostile-clients.py" "${hp%:*}" "${hp##*:}" \
      $((dur_h + 6)) 200 >hostile.out 2>hostile.err &
    hostile=$!
    sleep 5 # the slow connections open
    rough=$(load 64 "${dur_h}s")
    wait "$hostile" || true
    echo "  round $round, alone:   $calm (requests/s, p50, p99, socket errors, non-2xx)"
    echo "  round $round, hostile: $rough"
    echo "  round $round, the hostile clients got: $(cat hostile.out) $(tail -1 hostile.err)"
    awk -v a="$(ms "$(cut -d' ' -f3 <<<"$rough")")" \
        -v b="$(ms "$(cut -d' ' -f3 <<<"$calm")")" \
      -v r=$round 'BEGIN { printf "  round %d: p99 beside them over p99 alone: %.2f\n", r, a / b }'
  done
  stop
fi

# ---- d. the queue: a worker SIGKILLed under wrk
dur_q=$([[ $quick == 1 ]] && echo 12 || echo 30)
if want d && command -v redis-server >/dev/null; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    >redis.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do
    [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
  done
  url=redis://127.0.0.1:$port
  rm -f ready
  "$bin" serve --cfg "$cnn" --model cnn.emlc --grant g-sim --enclave sim \
    --heap-mb $heap --max-conns 512 --listen tcp:127.0.0.1:0 \
    --ready-file ready --threads 1 --queue "$url" --stream bench 2>fe.err &
  pids+=($!)
  server=$!
  for _ in $(seq 1 300); do [[ -s ready ]] && break; sleep 0.1; done
  addr=$(cut -d' ' -f1 ready)
  pin=$(cut -d' ' -f2 ready)
  for w in w1 w2; do
    "$bin" serve-worker --queue "$url" --stream bench --cfg "$cnn" \
      --model cnn.emlc --grant g-sim --enclave sim --heap-mb $heap \
      --consumer $w --threads 1 --claim-idle-ms 1000 2>$w.err &
    pids+=($!)
    eval "pid_$w=$!"
  done
  for _ in $(seq 1 300); do
    [[ $(grep -c admitted w1.err w2.err | grep -c ':1$') -eq 2 ]] && break
    sleep 0.1
  done
  metric() { curl -s -k --pinnedpubkey "$pin" "https://${addr#tcp:}/metrics" |
    grep -F "$1 " | grep -v '^#' | cut -d' ' -f2; }
  echo "the queue: fmnist-cnn, a front end and two workers (sim, 1 thread each), redis-server; wrk 64 connections, ${dur_q} s, --timeout 10s; w1 SIGKILLed at $((dur_q / 3)) s:"
  ( sleep $((dur_q / 3)); date +%s.%N >kill.t; kill -KILL "$pid_w1" ) &
  r=$(WRK_TIMEOUT=10s load 64 "${dur_q}s")
  wait "$pid_w1" 2>/dev/null || true
  t_claim=$(grep -o 'claimed .* answered at [0-9.]*' w2.err | head -1 | sed 's/.* at //')
  echo "  wrk: $r (requests/s, p50, p99, socket errors, non-2xx)"
  echo "  front end: $(metric enclaveml_queue_sent_total) sent, $(metric enclaveml_queue_answered_total) answered, $(metric enclaveml_queue_duplicates_total) duplicates dropped, $(metric enclaveml_queue_timeouts_total) timeouts (504), $(metric 'enclaveml_requests_total{code="200"}') answered 200"
  if [[ -n $t_claim ]]; then
    awk -v a="$t_claim" -v b="$(cat kill.t)" -v c="$(grep -o 'claimed [0-9]* entries' w2.err | head -1)" \
      'BEGIN { printf "  w2 %s of w1: recovery %.2f s from the kill\n", c, a - b }'
  else
    echo "  w2 claimed nothing (w1 held no entry when it died)"
  fi
  kill "$pid_w2" "$server" 2>/dev/null || true
  wait "$pid_w2" "$server" 2>/dev/null || true
fi

# ---- b. ResNet-50, int8 against fp32
want b || exit 0
dk=${EML_DARKNET_CFG:-/usr/local/share/enclaveml/darknet/cfg}
if [[ ! -f $dk/resnet50.cfg ]]; then
  echo "no Darknet cfgs in $dk: ResNet-50 skipped"
  exit 0
fi
rn=$tmp/resnet50.cfg
cp "$dk/resnet50.cfg" "$rn"
# near-initial weights: one epoch at batch 2 on 16 random images (IDX,
# 256x256x3), which are also the calibration set and the request body
python3 - <<'EOF'
import os, struct
n, h, w, c = 16, 256, 256, 3
os.makedirs("rdata", exist_ok=True)
def idx(path, dims, data):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, len(dims)))
        for d in dims: f.write(struct.pack(">I", d))
        f.write(data)
img = os.urandom(n * h * w * c)
idx("rdata/train-images-idx3-ubyte", [n, c * h, w], img)
idx("rdata/train-labels-idx1-ubyte", [n], bytes(i % 10 for i in range(n)))
idx("rdata/t10k-images-idx3-ubyte", [n, c * h, w], img)
idx("rdata/t10k-labels-idx1-ubyte", [n], bytes(i % 10 for i in range(n)))
open("rbody", "wb").write(img)
EOF
"$bin" train --cfg "$rn" --data rdata --epochs 1 --batch 2 --threads 2 \
  --out rn.safetensors --quiet 2>/dev/null
"$bin" convert --cfg "$rn" --from rn.safetensors --out rnc.safetensors \
  --calibration rdata --calibrate 16 2>/dev/null
"$bin" encrypt --key owner.key --in rnc.safetensors --role model \
  --out rn.emlc --quiet
heap=8192 # ResNet-50's activations and columns at batch 16
grant_for "$rn" sim g-rn
echo "ResNet-50 (Darknet's cfg), requests of 16 images (raw uint8), 2 connections, batches of 16, $dur_rn each:"
for round in 1 2; do
  line=""
  for p in fp32 int8; do
    serve "$rn" rn.emlc g-rn sim $p 16
    r=$(WRK_TIMEOUT=10s load 2 "$dur_rn" rbody raw)
    stop
    echo "  round $round, $p: $r"
    line="$line ${r%% *}"
  done
  awk -v r=$round '{ printf "  round %d: int8 over fp32 %.2fx\n", r, $2 / $1 }' <<<"$line"
done
