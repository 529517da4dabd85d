#!/usr/bin/env bash
# test_queue.sh BIN SRCDIR - the attested server's scale-out through Redis
# Streams end to end (docs/serve.md): a real redis-server of its own on a
# free loopback port, `enclaveml serve --queue` (a sim enclave: TLS, HTTP
# and the queue key) and two `enclaveml serve-worker`s (sim enclaves that
# run the model), all real processes over real sockets.
#   - clients get eval's accuracy through the queue, JSON and raw;
#   - a worker of another measurement (another --heap-mb) is refused and
#     never gets a key; the front end logs it;
#   - garbage and a tampered request entry are refused by the worker,
#     counted and acked, and it goes on; a replayed reply is dropped as a
#     duplicate and a tampered one counted in enclaveml_stream_malformed;
#   - a worker stopped while it holds entries, then SIGKILLed in the middle
#     of four clients' runs: the other claims its entries (XAUTOCLAIM) and
#     every request is answered once; the recovery time is printed;
#   - a request no worker answers gets 504 with a JSON error.
# Everything stops by itself; about 30 s.
set -u
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$2" && pwd)
fm=/usr/share/datasets/fashion-mnist
cfg=$src/cfg/fmnist-mlp.cfg
tmp=$(mktemp -d)
pids=()
redis=
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  [[ -n $redis ]] && kill "$redis" 2>/dev/null && wait "$redis" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export ENCLAVEML_HOME=$tmp/home
export LC_ALL=C
# shellcheck source=tests/lib.sh
. "$src/tests/lib.sh"
cd "$tmp" || exit 1

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null
then
  bad "redis-server and redis-cli are needed (apt-get install redis-server)"
  echo "$passed passed, $failed failed"
  exit 1
fi

# ---- the model, as in test_serve.sh, granted to two measurements
mkdir -p data
mkidx $fm/train-images-idx3-ubyte.gz data/train-images-idx3-ubyte 2000 784 3
mkidx $fm/train-labels-idx1-ubyte.gz data/train-labels-idx1-ubyte 2000 1 1
mkidx $fm/t10k-images-idx3-ubyte.gz data/t10k-images-idx3-ubyte 500 784 3
mkidx $fm/t10k-labels-idx1-ubyte.gz data/t10k-labels-idx1-ubyte 500 1 1
"$bin" train --cfg "$cfg" --data data --epochs 2 --threads 1 --seed 3 \
  --out w.safetensors --quiet 2>/dev/null
want=$("$bin" eval --cfg "$cfg" --weights w.safetensors --data data \
  --threads 1 --json | sed 's/.*"test_accuracy":\([0-9.]*\).*/\1/')
"$bin" keygen --out owner --quiet 2>/dev/null
"$bin" encrypt --key owner.key --in w.safetensors --role model \
  --out m.emlc --quiet
digest=$(sha256sum "$cfg" | cut -c1-64)
M=$("$bin" measure)
M2=$("$bin" measure --heap-mb 1024)
"$bin" attest --out r.json 2>/dev/null
"$bin" attest --heap-mb 1024 --out r2.json 2>/dev/null
"$bin" grant --key owner.key --report r.json --measurement "$M" --allow-sim \
  --recipient owner.pub --cfg-digest "$digest" --out g.grant 2>/dev/null
"$bin" grant --key owner.key --report r2.json --measurement "$M2" \
  --allow-sim --recipient owner.pub --cfg-digest "$digest" \
  --out g2.grant 2>/dev/null
if [[ -s g.grant && -s g2.grant && -n $want && $M != "$M2" ]]; then
  ok "model encrypted, granted to two measurements (eval's accuracy: $want)"
else
  bad "set-up: model, grants or eval missing"
fi

# ---- Redis on a free loopback port (another process may take the one we
# picked between the pick and the bind: then another)
for _ in 1 2 3 4 5; do
  port=$(port_base)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no >redis.log 2>&1 &
  redis=$!
  for _ in $(seq 1 50); do
    [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
    kill -0 "$redis" 2>/dev/null || break
    sleep 0.1
  done
  [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
  kill "$redis" 2>/dev/null
  wait "$redis" 2>/dev/null
  redis=
done
if [[ -n $redis ]]; then
  ok "redis-server on 127.0.0.1:$port"
else
  bad "no redis-server could start: $(tail -2 redis.log)"
  echo "$passed passed, $failed failed"
  exit 1
fi
url=redis://127.0.0.1:$port
rcli() { redis-cli -p "$port" "$@"; }

# ---- the front end and two workers
"$bin" serve --cfg "$cfg" --model m.emlc --grant g.grant --name fmnist \
  --listen tcp:127.0.0.1:0 --ready-file ready --threads 1 --queue "$url" \
  --stream q --queue-timeout-ms 20000 2>serve.err &
pids+=($!)
server=$!
for _ in $(seq 1 100); do [[ -s ready ]] && break; sleep 0.1; done
addr=$(cut -d' ' -f1 ready 2>/dev/null)
pin=$(cut -d' ' -f2 ready 2>/dev/null)
hp=${addr#tcp:}
fe=$(grep -o 'as front end [0-9a-f]*' serve.err | cut -d' ' -f4)
worker() { # NAME [options...]
  local name=$1
  shift
  "$bin" serve-worker --queue "$url" --stream q --cfg "$cfg" --model m.emlc \
    --grant g.grant --consumer "$name" --threads 1 --claim-idle-ms 1000 \
    "$@" 2>"$name.err" &
  pids+=($!)
}
worker w1
w1=$!
worker w2
w2=$!
for _ in $(seq 1 100); do
  [[ $(grep -c "admitted by front end" w1.err w2.err 2>/dev/null |
       grep -c ':1$') -eq 2 ]] && break
  sleep 0.1
done
if grep -q "worker 'w1' admitted" serve.err &&
   grep -q "worker 'w2' admitted" serve.err &&
   grep -q "admitted by front end $fe" w1.err &&
   grep -q "admitted by front end $fe" w2.err &&
   [[ $(rcli HLEN q:keys) -eq 2 && ${#fe} -eq 32 ]]; then
  ok "front end $fe on $addr; workers w1 and w2 admitted (their reports checked, the key wrapped to them)"
else
  bad "start: $(tail -3 serve.err) / $(tail -2 w1.err) / $(tail -2 w2.err)"
fi
snapshot() { # FILE: the front end's /metrics (one request)
  curl -s -k --pinnedpubkey "$pin" "https://$hp/metrics" >"$1"
}
value() { # FILE NAME: a sample's value
  grep -F "$2 " "$1" | grep -v '^#' | head -1 | cut -d' ' -f2
}
metric() { # NAME: its value now
  snapshot metrics.now
  value metrics.now "$1"
}
client() { # FORMAT COUNT BATCH
  "$bin" client --tls "$addr" --measurement "$M" --allow-sim --name fmnist \
    --format "$1" --count "$2" --batch "$3" --json
}
accuracy_is_want() {
  local got
  got=$(sed 's/.*"accuracy":\([0-9.]*\).*/\1/' <<<"$1")
  [[ -n $got ]] && awk -v a="$got" -v b="$want" \
    'BEGIN { exit !(a - b < 1e-9 && b - a < 1e-9) }'
}

# ---- predictions through the queue: eval's accuracy
for fmt in json raw; do
  out=$(client $fmt 500 7)
  if accuracy_is_want "$out"; then
    ok "client --format $fmt through the queue: $out"
  else
    bad "client --format $fmt: '$out' against eval's $want"
  fi
done
sent=$(metric enclaveml_queue_sent_total)
answered=$(metric enclaveml_queue_answered_total)
if [[ $sent -eq 144 && $answered -eq 144 ]]; then
  ok "the front end sent 144 requests to the workers and each was answered"
else
  bad "sent $sent, answered $answered"
fi

# ---- admission: a worker of another measurement is refused
expect_error "serve-worker of another measurement: never admitted" \
  "no front end admitted this worker within 3 s" \
  "$bin" serve-worker --queue "$url" --stream q --cfg "$cfg" \
  --model m.emlc --grant g2.grant --heap-mb 1024 --consumer bad \
  --threads 1 --admit-timeout-s 3 --quiet
if grep -q "worker 'bad' refused: it runs another enclave (measurement $M2)" \
     serve.err && [[ $(rcli HEXISTS q:keys bad) -eq 0 &&
                     $(metric enclaveml_queue_workers_refused_total) -eq 1 ]]
then
  ok "the front end refused it and logged why: $(grep "'bad'" serve.err | cut -c1-110)..."
else
  bad "admission: $(grep "'bad'" serve.err) keys: $(rcli HKEYS q:keys)"
fi

# ---- hostile request entries: refused, counted, acked; the worker goes on
flip='local e = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", 1)[1]
local f = e[2]
local b = f[6]
local i = tonumber(ARGV[1])
if ARGV[2] == "flip" then
  b = string.sub(b, 1, i - 1) .. string.char((string.byte(b, i) + 1) % 256)
      .. string.sub(b, i + 1)
end
return redis.call("XADD", KEYS[1], "*", f[1], f[2], f[3], f[4], f[5], b)'
rcli XADD q '*' foo bar >/dev/null
rcli XADD q '*' id 00 fe 11 body 22 >/dev/null
rcli EVAL "$flip" 1 q 40 flip >/dev/null
sleep 1
refused=$(cat w1.err w2.err | grep -c 'refused:')
if [[ $refused -eq 3 ]] && grep -q "does not authenticate" w1.err w2.err &&
   [[ $(rcli XPENDING q workers | head -1) -eq 0 ]] &&
   accuracy_is_want "$(client raw 500 50)"; then
  ok "garbage and a tampered request entry: refused and acked, the workers go on ($(cat w1.err w2.err | grep -o 'refused: .*' | cut -c1-60 | tr '\n' ';'))"
else
  bad "hostile entries: $refused refused; pending $(rcli XPENDING q workers | head -1); $(tail -2 w1.err)"
fi

# ---- hostile replies: a replay is a duplicate, a flipped byte malformed
dup0=$(metric enclaveml_queue_duplicates_total)
rcli EVAL "$flip" 1 "q:rep:$fe" 1 copy >/dev/null
rcli EVAL "$flip" 1 "q:rep:$fe" 30 flip >/dev/null
sleep 1
dup1=$(metric enclaveml_queue_duplicates_total)
mal=$(metric enclaveml_stream_malformed_total)
if [[ $((dup1 - dup0)) -eq 1 && $mal -eq 1 ]] &&
   grep -q "a reply entry refused: the body does not authenticate" serve.err
then
  ok "a replayed reply: dropped as a duplicate; a tampered one: refused, enclaveml_stream_malformed_total $mal"
else
  bad "hostile replies: duplicates $dup0 -> $dup1, malformed $mal"
fi

# ---- a worker dies holding entries: they are claimed, none is lost
snapshot m0
cpids=()
for i in 1 2 3 4; do
  client raw 500 1 >c$i.out 2>c$i.err &
  cpids+=($!)
done
sleep 0.3
# Stopped, w1 can send nothing more; once what it sent before is in (an
# XACK may be on its way), it holds what XPENDING says it holds.
# On a loaded machine Redis may take a while to get to that XACK: what
# w1 holds is read until two readings 0.3 s apart agree.
held=0
pending_w1() { rcli XPENDING q workers - + 100 w1 | awk 'NR % 4 == 1'; }
for _ in $(seq 1 20); do
  kill -STOP "$w1"
  sleep 0.05
  a=$(pending_w1)
  sleep 0.3
  b=$(pending_w1)
  held=$(grep -c . <<<"$b")
  [[ $held -gt 0 && $a == "$b" ]] && break
  held=0
  kill -CONT "$w1"
  sleep 0.02
done
t_kill=$(date +%s.%N)
kill -KILL "$w1"
wait "$w1" 2>/dev/null
failed_clients=0
for p in "${cpids[@]}"; do wait "$p" || failed_clients=$((failed_clients + 1)); done
snapshot m1
sent=$(($(value m1 enclaveml_queue_sent_total) -
        $(value m0 enclaveml_queue_sent_total)))
answered=$(($(value m1 enclaveml_queue_answered_total) -
            $(value m0 enclaveml_queue_answered_total)))
ok200=$(($(value m1 'enclaveml_requests_total{code="200"}') -
         $(value m0 'enclaveml_requests_total{code="200"}')))
dups=$(($(value m1 enclaveml_queue_duplicates_total) -
        $(value m0 enclaveml_queue_duplicates_total)))
timeouts=$(value m1 enclaveml_queue_timeouts_total)
all_right=1
for i in 1 2 3 4; do accuracy_is_want "$(cat c$i.out)" || all_right=0; done
for _ in $(seq 1 50); do # its note follows the answer it wrote
  grep -q 'claimed .* answered at' w2.err && break
  sleep 0.1
done
t_claim=$(grep -o 'claimed .* answered at [0-9.]*' w2.err | head -1 |
  sed 's/.* at //')
if [[ $held -gt 0 && $failed_clients -eq 0 && $all_right -eq 1 &&
      $sent -eq 2000 && $answered -eq 2000 && $ok200 -eq 2001 &&
      $timeouts -eq 0 && -n $t_claim ]]
then
  rec=$(awk -v a="$t_claim" -v b="$t_kill" 'BEGIN { printf "%.3f", a - b }')
  ok "w1 SIGKILLed holding $held entries during 4 clients' 2000 requests: 0 failed, each answered once (2000 sent, 2000 answered, 2000 more 200s, duplicates $dups, 504s 0); w2 $(grep -o 'claimed [0-9]* entries' w2.err | head -1): recovery $rec s from the kill"
else
  rcli XPENDING q workers - + 10; tail -5 w2.err
  bad "fault: held $held, failed clients $failed_clients, right $all_right, sent $sent, answered $answered, 200s $ok200, timeouts $timeouts, claim '$t_claim'; $(cat c*.err | head -3)"
fi

# ---- 504: a front end whose stream has no worker
"$bin" serve --cfg "$cfg" --model m.emlc --grant g.grant --name fmnist \
  --listen tcp:127.0.0.1:0 --ready-file ready2 --threads 1 --queue "$url" \
  --stream lonely --queue-timeout-ms 700 --quiet 2>serve2.err &
pids+=($!)
server2=$!
for _ in $(seq 1 100); do [[ -s ready2 ]] && break; sleep 0.1; done
hp2=$(cut -d' ' -f1 ready2 | sed 's/^tcp://')
pin2=$(cut -d' ' -f2 ready2)
body=$(printf '{"instances": [[%s0]]}' "$(printf '0,%.0s' $(seq 1 783))")
t0=$(date +%s.%N)
code=$(curl -s -k --pinnedpubkey "$pin2" -o body504 -w '%{http_code}' \
  -H 'Content-Type: application/json' -d "$body" \
  "https://$hp2/v1/models/fmnist:predict")
t1=$(date +%s.%N)
took=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
if [[ $code == 504 ]] && grep -q '"error": "no worker answered within 700 ms"' body504; then
  ok "no worker: 504 after ${took} s, $(cat body504)"
else
  bad "504: $code $(cat body504 2>/dev/null)"
fi
kill -TERM "$server2"
wait "$server2"

# ---- stop: the worker and the front end clean up after themselves
kill -TERM "$w2"
wait "$w2"
rc_w=$?
kill -TERM "$server"
wait "$server"
rc_s=$?
if [[ $rc_w -eq 0 && $rc_s -eq 0 ]] && grep -q "stopped:" w2.err &&
   grep -q "serve: stopped" serve.err &&
   [[ $(rcli EXISTS "q:rep:$fe") -eq 0 && $(rcli HEXISTS q:workers w2) -eq 0 ]]
then
  ok "SIGTERM stops both; the reply stream and w2's report are gone ($(tail -1 w2.err | cut -c1-100))"
else
  bad "stop: rc $rc_w $rc_s; $(tail -1 w2.err); $(tail -1 serve.err)"
fi
pids=()

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
