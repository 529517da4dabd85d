#!/usr/bin/env bash
# bench-serve.sh BUILD [QUICK] - the attested inference server under load
# (make bench section 10; docs/BENCHMARKS.md, issue 14).  wrk posts
# predict requests over HTTPS to `enclaveml serve` on loopback:
#   a. fmnist-cnn, 64 connections: the sim enclave (TLS inside it) and the
#      same server with --enclave none, alternated, two rounds each:
#      requests/s, latency p50/p99, errors and non-2xx; sim over none;
#   b. Darknet's ResNet-50 (random weights, 256x256x3 images as raw uint8
#      bodies), 16 connections, batches of 16: int8 over fp32.
# Everything it starts listens on 127.0.0.1 and is stopped at the end.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
quick=${2:-0}
bin=$build/enclaveml
src=$(cd "$(dirname "$0")/.." && pwd)
dur=$([[ $quick == 1 ]] && echo 8s || echo 60s)
dur_rn=$([[ $quick == 1 ]] && echo 8s || echo 30s)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
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

# load CONNS DUR [BODY]: wrk's summary as "rps p50ms p99ms errors non2xx"
load() {
  local out
  out=$(WRK_BODY=${3:-} WRK_TYPE=${4:-} wrk -t2 -c"$1" -d"$2" --latency \
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
echo "fmnist-cnn, 64 connections, $dur each, 2 server threads, wrk -t2:"
declare -A sum
for round in 1 2; do
  for be in none sim; do
    serve "$cnn" cnn.emlc "g-$be" $be fp32 64
    r=$(load 64 "$dur")
    stop
    echo "  round $round, --enclave $be: $r (requests/s, p50, p99, socket errors, non-2xx)"
    sum[$be]=$(awk -v a="${sum[$be]:-0}" -v b="${r%% *}" 'BEGIN {print a + b}')
  done
done
awk -v s="${sum[sim]}" -v n="${sum[none]}" \
  'BEGIN { printf "  sim over none (sums of the rounds): %.3f\n", s / n }'

# ---- b. ResNet-50, int8 against fp32
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
    r=$(load 2 "$dur_rn" rbody raw)
    stop
    echo "  round $round, $p: $r"
    line="$line ${r%% *}"
  done
  awk -v r=$round '{ printf "  round %d: int8 over fp32 %.2fx\n", r, $2 / $1 }' <<<"$line"
done
